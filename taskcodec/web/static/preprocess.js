// The export's preprocessing in the browser, pixel for pixel as taskcodec/io.py does it with Pillow.
//
// `taskcodec compress` scales the shorter side to the input size (or to floor(size / crop_pct))
// with Pillow's bicubic filter and crops the centre. A browser's canvas resampling is not Pillow's,
// and one pixel off moves latents and so bytes, so this file ports Pillow's resampler
// (libImaging/Resample.c: precompute_coeffs, normalize_coeffs_8bpc, the two 8-bit passes) exactly:
// the coefficients in doubles, then 22-bit fixed point, horizontal pass first. tests/web/ checks it
// against Pillow's output (golden vectors written by Pillow).

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;
const HALF = 2 ** (PRECISION_BITS - 1);

function bicubic(x) {
  const a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc for one axis: bounds and 22-bit integer weights. */
function coefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = 2.0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const weights = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1.0 / filterscale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      k[x] = bicubic((x + xmin - center + 0.5) * ss);
      ww += k[x];
    }
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0.0 ? k[x] / ww : k[x];
      weights[xx * ksize + x] = w < 0 ? Math.trunc(-0.5 + w * ONE) : Math.trunc(0.5 + w * ONE);
    }
    bounds[2 * xx] = xmin;
    bounds[2 * xx + 1] = xmax;
  }
  return { bounds, weights, ksize };
}

function clip8(ss) {
  const v = Math.floor(ss / ONE);
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** Pillow's `Image.resize((outW, outH), BICUBIC)` of an RGB image (Uint8Array, H x W x 3). */
export function resizeBicubic(rgb, width, height, outW, outH) {
  let src = rgb;
  let w = width;
  if (outW !== width) {
    const { bounds, weights, ksize } = coefficients(width, outW);
    const tmp = new Uint8Array(height * outW * 3);
    for (let y = 0; y < height; y++) {
      const row = y * width * 3;
      for (let xx = 0; xx < outW; xx++) {
        const xmin = bounds[2 * xx];
        const xmax = bounds[2 * xx + 1];
        let s0 = HALF, s1 = HALF, s2 = HALF;
        for (let x = 0; x < xmax; x++) {
          const kx = weights[xx * ksize + x];
          const p = row + (x + xmin) * 3;
          s0 += src[p] * kx;
          s1 += src[p + 1] * kx;
          s2 += src[p + 2] * kx;
        }
        const o = (y * outW + xx) * 3;
        tmp[o] = clip8(s0);
        tmp[o + 1] = clip8(s1);
        tmp[o + 2] = clip8(s2);
      }
    }
    src = tmp;
    w = outW;
  }
  if (outH === height) return src === rgb ? rgb.slice() : src;
  const { bounds, weights, ksize } = coefficients(height, outH);
  const out = new Uint8Array(outH * w * 3);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = bounds[2 * yy];
    const ymax = bounds[2 * yy + 1];
    for (let xx = 0; xx < w; xx++) {
      let s0 = HALF, s1 = HALF, s2 = HALF;
      for (let y = 0; y < ymax; y++) {
        const ky = weights[yy * ksize + y];
        const p = ((y + ymin) * w + xx) * 3;
        s0 += src[p] * ky;
        s1 += src[p + 1] * ky;
        s2 += src[p + 2] * ky;
      }
      const o = (yy * w + xx) * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return out;
}

/** Python's round(): halves to even (`round(2.5) == 2`), which io.py's sizes use. */
export function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** The size io._resize scales an image to before the centre crop: [newW, newH]. */
export function fitSize(width, height, outW, outH, cropPct = 1.0) {
  if (!(cropPct > 0.0 && cropPct <= 1.0)) throw new RangeError(`crop_pct must be in (0, 1], got ${cropPct}`);
  const fitW = cropPct < 1.0 ? Math.floor(outW / cropPct) : outW;
  const fitH = cropPct < 1.0 ? Math.floor(outH / cropPct) : outH;
  const scale = Math.max(fitW / width, fitH / height);
  return [Math.max(fitW, roundHalfEven(width * scale)), Math.max(fitH, roundHalfEven(height * scale))];
}

/** io.read_rgb(..., size=(outH, outW), crop=True, crop_pct): the model's input, uint8 outH x outW x 3. */
export function preprocess(rgb, width, height, outW, outH, cropPct = 1.0) {
  const [newW, newH] = fitSize(width, height, outW, outH, cropPct);
  const scaled = newW !== width || newH !== height ? resizeBicubic(rgb, width, height, newW, newH) : rgb;
  const left = Math.floor((newW - outW) / 2);
  const top = Math.floor((newH - outH) / 2);
  const out = new Uint8Array(outH * outW * 3);
  for (let y = 0; y < outH; y++) {
    const from = ((y + top) * newW + left) * 3;
    out.set(scaled.subarray(from, from + outW * 3), y * outW * 3);
  }
  return out;
}

/** RGBA canvas pixels -> RGB (alpha dropped, not composited, as io.read_rgb does). */
export function rgbaToRgb(rgba) {
  const n = rgba.length / 4;
  const rgb = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    rgb[3 * i] = rgba[4 * i];
    rgb[3 * i + 1] = rgba[4 * i + 1];
    rgb[3 * i + 2] = rgba[4 * i + 2];
  }
  return rgb;
}

/** uint8 H x W x 3 -> float32 [1, 3, H', W'] in [0, 1], replicate-padded to a multiple of `stride`. */
export function toModelInput(rgb, width, height, stride) {
  const pw = width + ((stride - (width % stride)) % stride);
  const ph = height + ((stride - (height % stride)) % stride);
  const x = new Float32Array(3 * ph * pw);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < ph; y++) {
      const sy = Math.min(y, height - 1);
      for (let xx = 0; xx < pw; xx++) {
        const sx = Math.min(xx, width - 1);
        x[(c * ph + y) * pw + xx] = rgb[(sy * width + sx) * 3 + c] / 255; // float32 of the double quotient = numpy's float32 division
      }
    }
  }
  return { data: x, dims: [1, 3, ph, pw] };
}

/** numpy's rint(y - median) in float32: the latent's symbols, channel-major, and each one's CDF index. */
export function quantise(y, dims, medians) {
  const [, channels, h, w] = dims;
  const symbols = new Array(channels * h * w);
  const indexes = new Array(channels * h * w);
  for (let c = 0; c < channels; c++) {
    for (let i = 0; i < h * w; i++) {
      const k = c * h * w + i;
      symbols[k] = roundHalfEven(Math.fround(y[k] - medians[c]));
      indexes[k] = c;
    }
  }
  return { symbols, indexes };
}
