// The page: a photo -> the export's preprocessing -> the client network (onnxruntime-web, wasm) ->
// the range coder -> the container `taskcodec compress` writes -> POST /v1/classify -> the labels.
// Every failure ends in a message in #message and leaves the page ready for the next photo.
import { RangeEncoder, packRecord, writeContainer } from './coder.js';
import { preprocess, quantise, rgbaToRgb, toModelInput } from './preprocess.js';

const $ = (id) => document.getElementById(id);
const state = { ort: null, session: null, info: null, client: null, runs: 0 };

class PageError extends Error {}

function setState(name) {
  document.body.dataset.state = name;
}

function showMessage(text) {
  $('message').textContent = text;
  $('message').hidden = !text;
}

const kB = (n) => (n < 10000 ? `${n.toLocaleString('en')} B` : `${(n / 1000).toFixed(1)} kB`);
const ms = (t) => `${t.toFixed(1)} ms`;
const mpx = (n) => `${(n / 1e6).toFixed(1)} Mpx`;

async function getJson(url) {
  let response;
  try {
    response = await fetch(url, { cache: 'no-store' });
  } catch {
    throw new PageError(`Cannot reach the server at ${location.origin}: is \`taskcodec serve\` still running?`);
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new PageError(body.error || `${url} answered ${response.status}`);
  return body;
}

async function loadClient() {
  setState('loading');
  const info = await getJson('/web/client.json');
  state.info = info;
  state.client = info.client;
  const pre = info.client.preprocessing;
  if (!pre) throw new PageError('This export records no preprocessing (an older export): re-export it with this taskcodec.');
  if (!info.runtime_installed) {
    throw new PageError('onnxruntime-web is not installed beside the server: run `npm ci --ignore-scripts` in taskcodec/web/ and restart it.');
  }
  const ort = await import('/web/ort/ort.wasm.min.mjs');
  ort.env.wasm.wasmPaths = '/web/ort/';
  ort.env.wasm.numThreads = 1; // threads need cross-origin isolation; one thread is deterministic and enough here
  const model = await fetch('/web/client.onnx', { cache: 'no-store' });
  if (!model.ok) throw new PageError(`the client model could not be loaded (${model.status})`);
  state.session = await ort.InferenceSession.create(new Uint8Array(await model.arrayBuffer()), { executionProviders: ['wasm'] });
  state.ort = ort;
  const [, h, w] = pre.input_size;
  const crop = (pre.crop_pct ?? 1.0) < 1.0 ? `, crop ${pre.crop_pct}` : '';
  $('model').textContent = `model ${info.client.codec_id} (${info.client.family}); photos become ${w}×${h} (${pre.interpolation}, centre crop${crop}) here`;
  setState('ready');
}

/** The image's size from its header, before any pixel is decoded (a 20,000×20,000 file is refused here). */
function imageSize(file) {
  return new Promise((resolve, reject) => {
    const url = URL.createObjectURL(file);
    const img = new Image();
    img.onload = () => {
      URL.revokeObjectURL(url);
      resolve([img.naturalWidth, img.naturalHeight]);
    };
    img.onerror = () => {
      URL.revokeObjectURL(url);
      reject(new PageError(`“${file.name}” is not an image this browser can read (${file.type || 'unknown type'}, ${kB(file.size)}). Choose a JPEG, PNG, WebP or GIF photo.`));
    };
    img.src = url;
  });
}

async function pixels(file, width, height) {
  let bitmap;
  try {
    // no colour management and no premultiplication: the file's own values, as Pillow reads them
    bitmap = await createImageBitmap(file, { colorSpaceConversion: 'none', premultiplyAlpha: 'none', imageOrientation: 'from-image' });
  } catch (e) {
    throw new PageError(`“${file.name}” could not be decoded (${e.message}); re-save it as PNG or JPEG.`);
  }
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  return { rgba: ctx.getImageData(0, 0, canvas.width, canvas.height).data, width: canvas.width, height: canvas.height };
}

/** The photo's container, as `taskcodec compress` writes it, with the time each step took. */
async function encode(file) {
  const [w0, h0] = await imageSize(file);
  if (w0 * h0 > state.info.max_pixels) {
    throw new PageError(`“${file.name}” is ${w0.toLocaleString('en')}×${h0.toLocaleString('en')} = ${mpx(w0 * h0)}, over this page's limit of ${mpx(state.info.max_pixels)} (the same as \`taskcodec compress\`). Downscale it first.`);
  }
  const t0 = performance.now();
  const { rgba, width, height } = await pixels(file, w0, h0);
  const t1 = performance.now();
  const pre = state.client.preprocessing;
  const [, outH, outW] = pre.input_size;
  const rgb = preprocess(rgbaToRgb(rgba), width, height, outW, outH, pre.crop_pct ?? 1.0);
  const t2 = performance.now();
  const input = toModelInput(rgb, outW, outH, state.client.stride);
  const { y } = await state.session.run({ x: new state.ort.Tensor('float32', input.data, input.dims) });
  const t3 = performance.now();
  const { symbols, indexes } = quantise(y.data, y.dims, state.client.medians);
  const encoder = new RangeEncoder();
  encoder.encodeWithIndexes(symbols, indexes, state.client.cdfs, state.client.cdf_lengths, state.client.offsets);
  const record = packRecord(outH, outW, encoder.flush());
  const container = writeContainer([{ record }], state.client.codec_id);
  const t4 = performance.now();
  return { container, rgb, outW, outH, width, height, times: { decode: t1 - t0, resize: t2 - t1, network: t3 - t2, coding: t4 - t3 } };
}

async function classify(container) {
  const t0 = performance.now();
  let response;
  try {
    response = await fetch('/v1/classify?topk=5', { method: 'POST', body: container, headers: { 'Content-Type': 'application/octet-stream' } });
  } catch {
    throw new PageError(`Cannot reach the server at ${location.origin}: is \`taskcodec serve\` still running? The photo was coded (${kB(container.length)}) but not sent; try again once it is up.`);
  }
  const body = await response.json().catch(() => ({}));
  const error = body.error || `no message (${response.statusText})`;
  if (response.status === 503) throw new PageError(`The server is busy (503: ${error}). Nothing is wrong with the photo: try again in a moment.`);
  if (response.status === 409) {
    const server = await getJson('/health').then((h) => h.model).catch(() => 'another model');
    throw new PageError(`This page's client is model ${state.client.codec_id}, but the server decodes model ${server}, so it refused the bytes (409). The server was restarted with another model: reload the page to load its client.`);
  }
  if (!response.ok) throw new PageError(`The server refused the photo (${response.status}): ${error}`);
  return { body, time: performance.now() - t0 };
}

async function jpegSize(rgb, w, h, quality) {
  const canvas = $('preview');
  canvas.width = w;
  canvas.height = h;
  const rgba = new Uint8ClampedArray(w * h * 4);
  for (let i = 0; i < w * h; i++) rgba.set([rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2], 255], 4 * i);
  canvas.getContext('2d').putImageData(new ImageData(rgba, w, h), 0, 0);
  if (quality === null) return null;
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, 'image/jpeg', quality / 100));
  return blob ? blob.size : null;
}

function showLabels(top) {
  $('labels').replaceChildren(...top.map((t) => {
    const li = document.createElement('li');
    const words = t.words && t.words !== t.name ? `${t.words} ` : '';
    li.innerHTML = '<span class="label"></span><span class="p"></span><span class="bar"></span>';
    li.querySelector('.label').textContent = `${words}(${t.name})`;
    li.querySelector('.p').textContent = `${(100 * t.probability).toFixed(1)}%`;
    li.querySelector('.bar').style.width = `${Math.max(1, 100 * t.probability)}%`;
    return li;
  }));
}

async function handle(file) {
  if (!state.session || document.body.dataset.state === 'busy') return;
  showMessage('');
  setState('busy');
  $('busy').hidden = false;
  try {
    const coded = await encode(file);
    const peer = state.info.jpeg_peer;
    const jpeg = await jpegSize(coded.rgb, coded.outW, coded.outH, peer ? peer.quality : null);
    const { body, time } = await classify(coded.container);
    const t = coded.times;
    showLabels(body.results[0].top);
    $('bytes-sent').textContent = kB(coded.container.length);
    $('bytes-file').textContent = `${kB(file.size)} (${coded.width}×${coded.height})`;
    if (peer) {
      $('jpeg-label').textContent = `as a JPEG, quality ${peer.quality}`;
      $('bytes-jpeg').textContent = jpeg === null ? 'n/a' : kB(jpeg);
      $('jpeg-note').textContent = `The same ${coded.outW}×${coded.outH} input as a JPEG (this browser's encoder) at quality ${peer.quality}: ` +
        (peer.reaches ? `the lowest quality whose top-1 (${peer.top1.toFixed(3)}) is not significantly below the reference's (${peer.reference_top1.toFixed(3)})`
          : `no quality reaches the reference's top-1 (${peer.reference_top1.toFixed(3)}); this is the highest, at ${peer.top1.toFixed(3)}`) +
        ` in ${peer.table}. The learned codec's own top-1 may be lower than the reference's: see the model's results.`;
    } else {
      $('jpeg-label').textContent = 'as a JPEG';
      $('bytes-jpeg').textContent = 'n/a';
      $('jpeg-note').textContent = 'No JPEG comparison: the export carries no results table and the server was started without one ' +
        '(`taskcodec serve --results-table results/<study>/rate_accuracy.csv` names the JPEG quality that reaches the reference\'s top-1).';
    }
    $('time-encode').textContent = ms(t.resize + t.network + t.coding);
    $('time-server').textContent = ms(time);
    $('time-note').textContent = `resize ${ms(t.resize)}, client network ${ms(t.network)}, range coding and container ${ms(t.coding)}; ` +
      `decoding the file took ${ms(t.decode)} more.${state.runs === 0 ? ' The first photo includes the wasm warm-up.' : ''}`;
    $('preview-caption').textContent = `what the model sees: ${coded.outW}×${coded.outH}`;
    $('result').hidden = false;
    state.runs += 1;
    document.body.dataset.runs = String(state.runs);
    setState('done');
  } catch (e) {
    showMessage(e instanceof PageError ? e.message : `Something went wrong: ${e.message || e}. The page still works: try another photo.`);
    setState('error');
  } finally {
    $('busy').hidden = true;
    $('file').value = '';
  }
}

// -- inputs: file picker, drag and drop, camera ----------------------------------------------------

$('file').addEventListener('change', () => $('file').files[0] && handle($('file').files[0]));
const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  if (e.dataTransfer.files[0]) handle(e.dataTransfer.files[0]);
});

let stream = null;
function closeCamera() {
  if (stream) stream.getTracks().forEach((track) => track.stop());
  stream = null;
  $('camera').hidden = true;
}
$('camera-open').addEventListener('click', async () => {
  if (!navigator.mediaDevices?.getUserMedia) {
    showMessage('This browser gives no camera to this page (a camera needs https or localhost). On a phone, "Choose a photo" offers the camera.');
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' } });
    $('video').srcObject = stream;
    $('camera').hidden = false;
    showMessage('');
  } catch (e) {
    showMessage(`The camera could not be opened (${e.name}: ${e.message}). Choose a photo instead.`);
  }
});
$('camera-close').addEventListener('click', closeCamera);
$('camera-shoot').addEventListener('click', () => {
  const video = $('video');
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext('2d').drawImage(video, 0, 0);
  closeCamera();
  canvas.toBlob((blob) => blob && handle(new File([blob], 'camera.png', { type: 'image/png' })), 'image/png');
});

loadClient().catch((e) => {
  showMessage(e instanceof PageError ? e.message : `The client could not be loaded: ${e.message || e}`);
  $('model').textContent = 'no client loaded';
  setState('unavailable');
});
