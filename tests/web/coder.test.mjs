// The page's JavaScript against the golden vectors Python wrote (tests/web/golden.py): the range
// coder, the record and container bytes, and Pillow's bicubic resize and crop. Run: node --test tests/web/
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { RangeEncoder, crc32, packRecord, writeContainer } from '../../taskcodec/web/static/coder.js';
import { fitSize, preprocess, resizeBicubic, roundHalfEven } from '../../taskcodec/web/static/preprocess.js';

const golden = JSON.parse(readFileSync(new URL('./golden.json', import.meta.url)));
const hex = (bytes) => Buffer.from(bytes).toString('hex');
const b64 = (text) => new Uint8Array(Buffer.from(text, 'base64'));

test('the range coder writes the Python coder\'s bytes', () => {
  assert.ok(golden.coder.length >= 30);
  for (const c of golden.coder) {
    const enc = new RangeEncoder();
    for (const s of c.segments) enc.encodeWithIndexes(s.symbols, s.indexes, c.cdfs, c.cdf_lengths, c.offsets);
    assert.equal(hex(enc.flush()), c.bytes, c.name);
  }
});

test('an encoder is reusable after flush', () => {
  const c = golden.coder.find((x) => x.name === 'random 0');
  const enc = new RangeEncoder();
  for (let k = 0; k < 2; k++) {
    for (const s of c.segments) enc.encodeWithIndexes(s.symbols, s.indexes, c.cdfs, c.cdf_lengths, c.offsets);
    assert.equal(hex(enc.flush()), c.bytes);
  }
});

test('symbols outside int32 and bad indexes are refused', () => {
  const c = golden.coder[1];
  const enc = new RangeEncoder();
  assert.throws(() => enc.encodeWithIndexes([2 ** 31], [0], c.cdfs, c.cdf_lengths, c.offsets), /int32/);
  assert.throws(() => enc.encodeWithIndexes([0.5], [0], c.cdfs, c.cdf_lengths, c.offsets), /int32/);
  assert.throws(() => enc.encodeWithIndexes([0], [1], c.cdfs, c.cdf_lengths, c.offsets), /CDF index/);
  assert.throws(() => enc.encodeWithIndexes([0, 1], [0], c.cdfs, c.cdf_lengths, c.offsets), /indexes/);
});

test('records and containers are the Python bytes', () => {
  for (const c of golden.containers) {
    if (c.kind === 'record') {
      assert.equal(hex(packRecord(c.height, c.width, Buffer.from(c.payload, 'hex'))), c.bytes);
    } else {
      const entries = c.entries.map((e) => ({ record: Buffer.from(e.record, 'hex'), label: e.label, name: e.name }));
      assert.equal(hex(writeContainer(entries, c.codec_id)), c.bytes, `${entries.length} entries`);
    }
  }
  assert.equal(crc32(new TextEncoder().encode('123456789')), 0xcbf43926);
  assert.throws(() => writeContainer([], 'not-hex'), /16 hex digits/);
});

test('bicubic resize is Pillow\'s, pixel for pixel', () => {
  for (const c of golden.resize) {
    const out = resizeBicubic(b64(c.rgb), c.width, c.height, c.out_width, c.out_height);
    assert.deepEqual(out, b64(c.expected), `${c.width}x${c.height} -> ${c.out_width}x${c.out_height}`);
  }
});

test('the whole preprocessing (fit, bicubic, centre crop, crop_pct) is io.read_rgb\'s', () => {
  for (const c of golden.preprocess) {
    const out = preprocess(b64(c.rgb), c.width, c.height, c.out_width, c.out_height, c.crop_pct);
    assert.deepEqual(out, b64(c.expected), `${c.width}x${c.height} -> ${c.out_width}x${c.out_height} crop_pct ${c.crop_pct}`);
  }
});

test('sizes round half to even, as Python\'s round', () => {
  assert.deepEqual([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999, 2.5001].map(roundHalfEven), [0, 2, 2, -0, -2, -2, 2, 3]);
  assert.deepEqual(fitSize(100, 50, 64, 64), [128, 64]);
  assert.throws(() => fitSize(10, 10, 8, 8, 0), /crop_pct/);
});
