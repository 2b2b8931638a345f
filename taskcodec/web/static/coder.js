// The range coder, the per-image record and the container v1, byte for byte as taskcodec writes them.
//
// A port of taskcodec/range_coder.py (RangeEncoder), taskcodec/bitstream.py (pack_record) and
// taskcodec/container.py (write_container); docs/format.md has the byte layout. The Python coder is
// the reference: tests/web/coder_golden.json holds what it writes, and `node --test tests/web/` (and
// the browser test) check this file against it.
//
// JavaScript numbers are doubles, exact to 2**53. The coder's `low` runs to 2**33 and the flush
// looks at values up to 2**41, so they use arithmetic, never the 32-bit bitwise operators. Symbols
// must be int32 (what a float32 latent rounds to, as CompressAI casts them).

const PRECISION = 16;
const TOP = 2 ** 24;
const TWO32 = 2 ** 32;
const MASK32 = TWO32 - 1;
const BYPASS_BITS = 4;
const BYPASS_MAX = (1 << BYPASS_BITS) - 1;
const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

export class RangeEncoder {
  constructor() {
    this.reset();
  }

  reset() {
    this.low = 0;
    this.range = MASK32;
    this.cache = 0;
    this.cacheSize = 1;
    this.out = [];
  }

  shiftLow() {
    if (this.low < 0xff000000 || this.low > MASK32) {
      const carry = Math.floor(this.low / TWO32);
      let temp = this.cache;
      do {
        this.out.push((temp + carry) & 0xff);
        temp = 0xff;
        this.cacheSize -= 1;
      } while (this.cacheSize);
      this.cache = Math.floor(this.low / TOP) & 0xff;
    }
    this.cacheSize += 1;
    this.low = (this.low % TOP) * 256;
  }

  encode(start, freq) {
    const r = Math.floor(this.range / 2 ** PRECISION);
    this.low += r * start;
    this.range = r * freq;
    while (this.range < TOP) {
      this.range *= 256;
      this.shiftLow();
    }
  }

  bypass(nibble) {
    this.encode(nibble * 2 ** (PRECISION - BYPASS_BITS), 2 ** (PRECISION - BYPASS_BITS));
  }

  /** Append `symbols`; `symbols[i]` is coded with the CDF `cdfs[indexes[i]]` (CompressAI's layout). */
  encodeWithIndexes(symbols, indexes, cdfs, cdfLengths, offsets) {
    if (symbols.length !== indexes.length) {
      throw new RangeError(`${symbols.length} symbols but ${indexes.length} indexes`);
    }
    for (let i = 0; i < symbols.length; i++) {
      const sym = symbols[i];
      const idx = indexes[i];
      if (!Number.isInteger(sym) || sym < INT32_MIN || sym > INT32_MAX) {
        throw new RangeError(`symbol ${sym} at ${i} is not an int32`);
      }
      if (!(idx >= 0 && idx < cdfs.length)) throw new RangeError(`CDF index ${idx} at ${i} is out of range`);
      const cdf = cdfs[idx];
      const maxValue = cdfLengths[idx] - 2;
      let value = sym - offsets[idx];
      let raw = 0;
      if (value < 0) {
        raw = -2 * value - 1;
        value = maxValue;
      } else if (value >= maxValue) {
        raw = 2 * (value - maxValue);
        value = maxValue;
      }
      this.encode(cdf[value], cdf[value + 1] - cdf[value]);
      if (value === maxValue) {
        // escape: the raw value follows in 4-bit bypass nibbles, their count first
        let n = 0;
        while (raw >= 2 ** (n * BYPASS_BITS)) n += 1;
        let count = n;
        while (count >= BYPASS_MAX) {
          this.bypass(BYPASS_MAX);
          count -= BYPASS_MAX;
        }
        this.bypass(count);
        for (let j = 0; j < n; j++) this.bypass(Math.floor(raw / 2 ** (j * BYPASS_BITS)) % 16);
      }
    }
  }

  /** End the stream with the fewest bytes that still identify the final interval. */
  flush() {
    const lo = this.low;
    const hi = this.low + this.range - 1;
    for (let k = 40; k >= 0; k--) {
      const step = 2 ** k;
      const v = Math.floor((lo + step - 1) / step) * step;
      if (v <= hi) {
        this.low = v;
        break;
      }
    }
    for (let i = 0; i < 5; i++) this.shiftLow();
    let end = this.out.length;
    while (end > 1 && this.out[end - 1] === 0) end -= 1; // the decoder reads missing bytes as zeros
    const stream = Uint8Array.from(this.out.slice(1, end)); // the first byte is the initial cache: never sent
    this.reset();
    return stream;
  }
}

// -- the record (taskcodec/bitstream.py) and the container (taskcodec/container.py) --------------

/** size code -> [height, width]; append only, as in bitstream.COMMON_SIZES. */
export const COMMON_SIZES = [
  [64, 64], [32, 32], [28, 28], [96, 96], [128, 128], [224, 224], [256, 256], [299, 299], [384, 384], [512, 512],
];
const EXPLICIT_SIZE = 0xff;
const MAX_SIDE = 2 ** 16;
export const MAGIC = [0x89, 0x54, 0x4b, 0x43]; // \x89TKC
export const VERSION = 1;
const TAG_LABEL = 0x01;
const TAG_NAME = 0x02;
const TAG_END = 0xff;

/** Append `n >= 0` as an unsigned LEB128 varint. */
export function putVarint(n, out) {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`cannot write ${n} as a varint`);
  do {
    const byte = n % 128;
    n = Math.floor(n / 128);
    out.push(byte | (n ? 0x80 : 0));
  } while (n);
}

/** One image's record: size code (or 0xFF + two varints), then the range-coded payload. */
export function packRecord(height, width, payload) {
  if (!(height > 0 && height <= MAX_SIDE && width > 0 && width <= MAX_SIDE)) {
    throw new RangeError(`image size ${height}x${width} is outside 1..${MAX_SIDE}`);
  }
  const code = COMMON_SIZES.findIndex(([h, w]) => h === height && w === width);
  const out = [];
  if (code >= 0) {
    out.push(code);
  } else {
    out.push(EXPLICIT_SIZE);
    putVarint(height, out);
    putVarint(width, out);
  }
  return Uint8Array.from([...out, ...payload]);
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** zlib's CRC-32 (what the container's trailer holds). */
export function crc32(bytes, crc = 0) {
  let c = (crc ^ 0xffffffff) >>> 0;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function codecIdBytes(codecId) {
  if (typeof codecId !== 'string' || !/^[0-9a-fA-F]{16}$/.test(codecId)) {
    throw new RangeError(`model id must be 16 hex digits, got ${JSON.stringify(codecId)}`);
  }
  return Array.from({ length: 8 }, (_, i) => parseInt(codecId.slice(2 * i, 2 * i + 2), 16));
}

/** A whole container: header, entries ({record, label?, name?}), trailer with count and CRC-32. */
export function writeContainer(entries, codecId) {
  const out = [...MAGIC, VERSION, ...codecIdBytes(codecId)];
  for (const { record, label = null, name = null } of entries) {
    if (!(record.length > 0)) throw new RangeError('a record must be at least 1 byte');
    out.push((label !== null ? TAG_LABEL : 0) | (name !== null ? TAG_NAME : 0));
    if (label !== null) putVarint(label, out);
    if (name !== null) {
      const utf8 = new TextEncoder().encode(name);
      putVarint(utf8.length, out);
      out.push(...utf8);
    }
    putVarint(record.length, out);
    for (const b of record) out.push(b);
  }
  out.push(TAG_END);
  putVarint(entries.length, out);
  const body = Uint8Array.from(out);
  const crc = crc32(body);
  const result = new Uint8Array(body.length + 4);
  result.set(body);
  result.set([crc >>> 24, (crc >>> 16) & 0xff, (crc >>> 8) & 0xff, crc & 0xff], body.length);
  return result;
}
