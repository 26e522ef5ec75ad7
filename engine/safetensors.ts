// The safetensors file format (https://github.com/huggingface/safetensors): parse, serialize, read, and write
// atomically. Nothing here knows about models or checkpoints: the checkpoint layout (model + optimizer + RNG and
// run state, and its naming conventions) is the models layer's (models/checkpoint.ts).
//
// File layout: [u64 little-endian N][N bytes of UTF-8 JSON header, space-padded][data]. The header maps each tensor
// name to {dtype, shape, data_offsets: [begin, end]} (byte offsets into the data section) and may hold
// "__metadata__": {string: string}.
//
// Dtypes: F32, I32, U32 are read and written as they are. F64 is read and rounded to f32, I64 read and converted to
// i32 (an error names the tensor and the first value outside int32). Anything else (F16, BF16, U8, BOOL, ...) is an
// error naming the tensor. Every problem is an Error that names the file and, where one is at fault, the tensor:
// truncated file, header length beyond the file or over MAX_HEADER_BYTES, malformed JSON, bad shapes, offsets out of
// range / overlapping / not dtype size * numel, metadata that is not string -> string.
//
// Browsers: parseSafetensors / serializeSafetensors work on Uint8Array only. The path-based functions import
// node:fs lazily. writeSafetensors is atomic: a temp file in the same folder, then rename, so a crash never leaves
// a half-written file under the final name.
import { getenv } from './env.js';
import { numel, shapeStr, type DType, type TypedArray } from './tensor.js';

/** Header lengths above this are rejected before any allocation (the reference implementation's limit). */
export const MAX_HEADER_BYTES = 100_000_000;

export type SafetensorsDType = 'F32' | 'I32' | 'U32' | 'F64' | 'I64';
const READ_DTYPES: Record<SafetensorsDType, { bytes: number; to: DType }> = {
  F32: { bytes: 4, to: 'f32' },
  I32: { bytes: 4, to: 'i32' },
  U32: { bytes: 4, to: 'u32' },
  F64: { bytes: 8, to: 'f32' },
  I64: { bytes: 8, to: 'i32' },
};
const WRITE_DTYPES: Record<DType, SafetensorsDType> = { f32: 'F32', i32: 'I32', u32: 'U32' };

/** A host tensor: what readSafetensors returns and writeSafetensors accepts (and a state dict may hold). */
export interface TensorData {
  dtype: DType;
  shape: readonly number[];
  data: TypedArray;
}

export interface SafetensorsEntry extends TensorData {
  shape: number[];
  /** The dtype stored in the file (F64 / I64 were converted to f32 / i32). */
  fileDtype: SafetensorsDType;
}

export interface SafetensorsFile {
  /** name -> tensor, in the file's data order. */
  tensors: Map<string, SafetensorsEntry>;
  metadata: Record<string, string>;
}

/** An error in a safetensors file (or a checkpoint); `file` and (when one is at fault) `tensor` name the culprit. */
export class SafetensorsError extends Error {
  constructor(
    readonly file: string,
    readonly tensor: string | undefined,
    readonly problem: string,
  ) {
    super(`${file}: ${tensor !== undefined ? `tensor '${tensor}': ` : ''}${problem}`);
    this.name = 'SafetensorsError';
  }
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * JSON.parse for untrusted text (file headers, checkpoint metadata): a `__proto__` key anywhere is refused, so a
 * parsed object can never change a prototype when it is later copied or merged. Throws SyntaxError for bad JSON.
 */
export function parseJsonSafe(text: string): unknown {
  return JSON.parse(text, (key, value: unknown) => {
    if (key === '__proto__') throw new SyntaxError("the key '__proto__' is not allowed");
    return value;
  });
}

// ------------------------------------------------------------------------------------------------ parse
/** Parse a safetensors image. `file` names it in error messages. Tensor data is copied (aligned, owned). */
export function parseSafetensors(bytes: Uint8Array, file = '<bytes>'): SafetensorsFile {
  const fail = (problem: string, tensor?: string): never => {
    throw new SafetensorsError(file, tensor, problem);
  };
  if (bytes.byteLength < 8) fail(`truncated: ${bytes.byteLength} bytes, a safetensors file starts with an 8-byte header length`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = dv.getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) fail(`header length ${n} is over the ${MAX_HEADER_BYTES}-byte limit (not a safetensors file, or corrupt)`);
  const headerLen = Number(n);
  if (8 + headerLen > bytes.byteLength) {
    fail(`truncated or corrupt: header length ${headerLen} runs past the end of the file (${bytes.byteLength} bytes)`);
  }
  let header: unknown;
  try {
    header = parseJsonSafe(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + headerLen)));
  } catch (e) {
    fail(`malformed header JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  if (!header || typeof header !== 'object' || Array.isArray(header)) fail('the header is not a JSON object');
  const dataStart = 8 + headerLen;
  const dataLen = bytes.byteLength - dataStart;
  const metadata: Record<string, string> = {};
  const ranges: Array<{ name: string; begin: number; end: number }> = [];
  const specs = new Map<string, { dtype: SafetensorsDType; shape: number[]; begin: number; end: number }>();
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (!raw || typeof raw !== 'object' || Array.isArray(raw)) fail('__metadata__ must be an object of strings');
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`__metadata__['${k}'] is ${JSON.stringify(v)}, metadata values must be strings`);
        metadata[k] = v as string;
      }
      continue;
    }
    if (!raw || typeof raw !== 'object' || Array.isArray(raw)) fail('header entry is not an object', name);
    const { dtype, shape, data_offsets: offs } = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof dtype !== 'string') fail('missing dtype', name);
    const dt = dtype as string;
    if (!(dt in READ_DTYPES)) fail(`unsupported dtype ${dt} (supported: F32, I32, U32; F64 and I64 are converted)`, name);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      fail(`shape ${JSON.stringify(shape)} is not a list of non-negative integers`, name);
    }
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      fail(`data_offsets ${JSON.stringify(offs)} is not [begin, end] with non-negative integers`, name);
    }
    const [begin, end] = offs as [number, number];
    const shp = shape as number[];
    if (end < begin) fail(`data_offsets [${begin}, ${end}] end before they begin`, name);
    if (end > dataLen) fail(`data_offsets [${begin}, ${end}] are out of range: the data section has ${dataLen} bytes (truncated file?)`, name);
    const want = numel(shp) * READ_DTYPES[dt as SafetensorsDType].bytes;
    if (!Number.isSafeInteger(want)) {
      fail(`shape ${shapeStr(shp)} of ${dt} needs ${want} bytes, more than the data section's ${dataLen} (corrupt shape)`, name);
    }
    if (end - begin !== want) {
      fail(`data_offsets [${begin}, ${end}] hold ${end - begin} bytes, but ${dt} ${shapeStr(shp)} needs ${want}`, name);
    }
    specs.set(name, { dtype: dt as SafetensorsDType, shape: [...shp], begin, end });
    ranges.push({ name, begin, end });
  }
  ranges.sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < ranges.length; i++) {
    const a = ranges[i - 1]!;
    const b = ranges[i]!;
    if (b.begin < a.end && b.end > b.begin && a.end > a.begin) {
      fail(`data_offsets [${b.begin}, ${b.end}] overlap those of '${a.name}' [${a.begin}, ${a.end}]`, b.name);
    }
  }
  const tensors = new Map<string, SafetensorsEntry>();
  for (const { name } of ranges) {
    const s = specs.get(name)!;
    const src = bytes.subarray(dataStart + s.begin, dataStart + s.end);
    tensors.set(name, { ...decode(s.dtype, src, numel(s.shape), (p) => fail(p, name)), shape: s.shape, fileDtype: s.dtype });
  }
  return { tensors, metadata };
}

function decode(dtype: SafetensorsDType, src: Uint8Array, n: number, fail: (p: string) => never): { dtype: DType; data: TypedArray } {
  const to = READ_DTYPES[dtype].to;
  if (dtype === 'F32' || dtype === 'I32' || dtype === 'U32') {
    const copy = new Uint8Array(src.byteLength); // aligned, owned (Node's Buffer.slice would share its pool)
    copy.set(src);
    if (LITTLE_ENDIAN) {
      const data = to === 'f32' ? new Float32Array(copy.buffer) : to === 'i32' ? new Int32Array(copy.buffer) : new Uint32Array(copy.buffer);
      return { dtype: to, data };
    }
    const dv = new DataView(copy.buffer);
    const data = to === 'f32' ? new Float32Array(n) : to === 'i32' ? new Int32Array(n) : new Uint32Array(n);
    for (let i = 0; i < n; i++) data[i] = to === 'f32' ? dv.getFloat32(4 * i, true) : to === 'i32' ? dv.getInt32(4 * i, true) : dv.getUint32(4 * i, true);
    return { dtype: to, data };
  }
  const dv = new DataView(src.buffer, src.byteOffset, src.byteLength);
  if (dtype === 'F64') {
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = dv.getFloat64(8 * i, true);
    return { dtype: 'f32', data };
  }
  const data = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const v = dv.getBigInt64(8 * i, true);
    if (v > 2147483647n || v < -2147483648n) fail(`I64 value ${v} at index ${i} does not fit in int32 (I64 tensors are read as i32)`);
    data[i] = Number(v);
  }
  return { dtype: 'i32', data };
}

// ------------------------------------------------------------------------------------------------ serialize
export type TensorMap = Map<string, TensorData> | Record<string, TensorData>;

function entriesOf<T>(m: Map<string, T> | Record<string, T>): Array<[string, T]> {
  return m instanceof Map ? [...m.entries()] : Object.entries(m);
}

/** Serialize tensors (f32/i32/u32) and string metadata; names sorted, header space-padded to 8 bytes. */
export function serializeSafetensors(tensors: TensorMap, metadata: Record<string, string> = {}, file = '<bytes>'): Uint8Array {
  const list = entriesOf(tensors).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const header: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== 'string') throw new SafetensorsError(file, undefined, `metadata '${k}' is not a string`);
  }
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let off = 0;
  for (const [name, t] of list) {
    if (name === '__metadata__') throw new SafetensorsError(file, name, 'this name is reserved');
    const st = WRITE_DTYPES[t.dtype];
    if (!st) throw new SafetensorsError(file, name, `cannot write dtype ${String(t.dtype)}`);
    if (numel(t.shape) !== t.data.length) throw new SafetensorsError(file, name, `${t.data.length} values for shape ${shapeStr(t.shape)}`);
    header[name] = { dtype: st, shape: [...t.shape], data_offsets: [off, off + t.data.byteLength] };
    off += t.data.byteLength;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const pad = (8 - (json.byteLength % 8)) % 8;
  if (pad) json = new TextEncoder().encode(JSON.stringify(header) + ' '.repeat(pad));
  const out = new Uint8Array(8 + json.byteLength + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.byteLength), true);
  out.set(json, 8);
  let pos = 8 + json.byteLength;
  for (const [, t] of list) {
    const src = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    if (LITTLE_ENDIAN) out.set(src, pos);
    else {
      const dv = new DataView(out.buffer, pos, t.data.byteLength);
      for (let i = 0; i < t.data.length; i++) {
        if (t.dtype === 'f32') dv.setFloat32(4 * i, t.data[i]!, true);
        else if (t.dtype === 'i32') dv.setInt32(4 * i, t.data[i]!, true);
        else dv.setUint32(4 * i, t.data[i]!, true);
      }
    }
    pos += t.data.byteLength;
  }
  return out;
}

// ------------------------------------------------------------------------------------------------ files (Node)
/** Read and validate a safetensors file (or parse an in-memory image; `name` labels it in errors). */
export async function readSafetensors(src: string | Uint8Array, name?: string): Promise<SafetensorsFile> {
  if (typeof src !== 'string') return parseSafetensors(src, name);
  const fs = await import('node:fs/promises');
  let bytes: Uint8Array;
  try {
    bytes = await fs.readFile(src);
  } catch (e) {
    const code = (e as { code?: string }).code;
    throw new SafetensorsError(src, undefined, code === 'ENOENT' ? 'file not found' : `cannot read (${e instanceof Error ? e.message : String(e)})`);
  }
  return parseSafetensors(bytes, src);
}

/** Write atomically: a temp file beside `path`, flushed to disk, then renamed over it. */
export async function writeSafetensors(path: string, tensors: TensorMap, metadata: Record<string, string> = {}): Promise<void> {
  await writeFileAtomic(path, serializeSafetensors(tensors, metadata, path));
}

async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const fs = await import('node:fs/promises');
  const { dirname, basename, join } = await import('node:path');
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`);
  try {
    const fh = await fs.open(tmp, 'w');
    try {
      // Test hook (SEQREC_TEST_SLOW_WRITE_MS): write half, pause, write the rest, so a test can kill the process
      // in the middle of a checkpoint write and check that nothing under the final name is ever partial.
      const pause = Number(getenv('SEQREC_TEST_SLOW_WRITE_MS', '0'));
      if (pause > 0) {
        const half = bytes.byteLength >> 1;
        await fh.write(bytes, 0, half);
        await new Promise((r) => setTimeout(r, pause));
        await fh.write(bytes, half, bytes.byteLength - half);
      } else await fh.writeFile(bytes);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, path);
  } catch (e) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw new SafetensorsError(path, undefined, `cannot write (${e instanceof Error ? e.message : String(e)})`);
  }
}
