// Tensor: a plain data class over a pooled GPU buffer. Contiguous row-major; dtype f32 | i32 | u32.
// `view(shape)` shares the ref-counted storage. Lifetimes are explicit: dispose(), or scope(fn) which disposes
// every tensor created inside fn except the ones it returns.
import type { GraphNode } from './autograd.js';
import { flags } from './env.js';
import { rt } from './runtime.js';
import { markWritten, writeVersion } from './versions.js';

export type DType = 'f32' | 'i32' | 'u32';
export type TypedArray = Float32Array | Int32Array | Uint32Array;
export type Shape = readonly number[];

// GPUBufferUsage is a global only once the webgpu module is loaded (Node), so it is read lazily. UNIFORM: a small
// tensor (a weight) can also be bound as a `var<uniform>` array (reflect.ts), which llvmpipe reads faster.
export function tensorUsage(): number {
  return GPUBufferUsage.STORAGE | GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
}

/**
 * How many vec4s `n` 4-byte elements are when every binding listed starts on a 16-byte boundary and n is a multiple
 * of 4; else 0. Kernels with a vec4 variant (llvmpipe loads and stores per instruction, so vec4 runs 2-4x faster
 * there: kernels/README.md) pick it with this: `const v = vec4Count(n, x, out); k[v ? 1 : 0].run(..., { n: v || n })`.
 * (Tensors start at byte 0 of their buffer; regions of a buffer may not.)
 */
export function vec4Count(n: number, ...bindings: ReadonlyArray<{ readonly byteOffset: number }>): number {
  return n % 4 === 0 && bindings.every((b) => b.byteOffset % 16 === 0) ? n / 4 : 0;
}

export function numel(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function checkShape(shape: Shape, what = 'shape'): void {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new Error(`${what} [${shape.join(', ')}] must hold non-negative integers`);
  }
}

export function shapeStr(shape: Shape): string {
  return `[${shape.join(', ')}]`;
}

export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Ref-counted GPU storage shared by a tensor and its views. */
export class Storage {
  refs = 1;
  constructor(
    readonly buffer: GPUBuffer,
    readonly bytes: number,
  ) {}
  retain(): this {
    this.refs++;
    return this;
  }
  release(): void {
    if (--this.refs === 0) rt().pool.release(this.buffer);
  }
}

// ---------------------------------------------------------------- scopes
type Frame = Set<Tensor> | null; // null: an untracked region (backward, optimizer state, saved tensors)
const frames: Frame[] = [];

function track(t: Tensor): void {
  const f = frames[frames.length - 1];
  if (f) f.add(t);
}

function collect(v: unknown, out: Set<Tensor>, depth = 0): void {
  if (v instanceof Tensor) out.add(v);
  else if (depth < 4 && Array.isArray(v)) for (const x of v) collect(x, out, depth + 1);
  else if (depth < 4 && v instanceof Map) for (const x of v.values()) collect(x, out, depth + 1);
  else if (depth < 4 && v && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) {
    for (const x of Object.values(v)) collect(x, out, depth + 1);
  }
}

/**
 * Run fn; dispose every tensor it created that is not part of its result (tfjs's tidy). Result tensors move
 * to the enclosing scope. fn must be synchronous.
 */
export function scope<T>(fn: () => T): T {
  const frame = new Set<Tensor>();
  frames.push(frame);
  let result: T;
  try {
    result = fn();
  } finally {
    frames.pop();
  }
  if (result instanceof Promise) throw new Error('scope(fn): fn must be synchronous (await outside the scope)');
  const keepSet = new Set<Tensor>();
  collect(result, keepSet);
  for (const t of frame) if (!keepSet.has(t)) t.dispose();
  for (const t of keepSet) if (frame.has(t)) track(t);
  return result;
}

/** Run fn with tensor tracking off: what it creates belongs to nobody's scope. */
export function untracked<T>(fn: () => T): T {
  frames.push(null);
  try {
    return fn();
  } finally {
    frames.pop();
  }
}

/** Take a tensor out of the enclosing scopes: it survives them and must be disposed by its owner. */
export function keep<T extends Tensor>(t: T): T {
  for (const f of frames) f?.delete(t);
  return t;
}

// ---------------------------------------------------------------- tensor
export class Tensor {
  readonly shape: Shape;
  readonly dtype: DType;
  readonly size: number;
  readonly byteOffset = 0;
  requiresGrad = false;
  grad: Tensor | null = null;
  /** The op that produced this tensor, while its graph is alive (set by autograd). */
  node: GraphNode | null = null;
  name = '';
  private storage: Storage | null;

  constructor(storage: Storage, shape: Shape, dtype: DType) {
    checkShape(shape);
    this.storage = storage;
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    this.size = numel(shape);
    if (this.size * 4 > storage.bytes) throw new Error(`tensor ${shapeStr(shape)} needs ${this.size * 4} bytes, storage has ${storage.bytes}`);
    track(this);
  }

  get disposed(): boolean {
    return this.storage === null;
  }

  get buffer(): GPUBuffer {
    if (!this.storage) throw new Error(`use of a disposed tensor ${this.describe()}`);
    return this.storage.buffer;
  }

  get byteLength(): number {
    return this.size * 4;
  }

  get ndim(): number {
    return this.shape.length;
  }

  /** The storage, for views and saved tensors (engine-internal). */
  get _storage(): Storage {
    if (!this.storage) throw new Error(`use of a disposed tensor ${this.describe()}`);
    return this.storage;
  }

  describe(): string {
    return `${this.name ? this.name + ' ' : ''}${this.dtype}${shapeStr(this.shape)}`;
  }

  toString(): string {
    return `Tensor(${this.describe()}${this.requiresGrad ? ', requiresGrad' : ''})`;
  }

  /** An uninitialised tensor from the pool (its contents are whatever the buffer held). */
  static empty(shape: Shape, dtype: DType = 'f32'): Tensor {
    checkShape(shape);
    const bytes = Math.max(4, numel(shape) * 4);
    const buf = rt().pool.acquire(bytes, tensorUsage(), 'tensor');
    // The buffer came back from the pool only after its last users were submitted, so this write lands
    // after them and before anything recorded from now on.
    if (flags.poison) rt().device.queue.writeBuffer(buf, 0, poisonBytes(buf.size));
    return new Tensor(new Storage(buf, buf.size), shape, dtype);
  }

  /** Upload a typed array. dtype follows the array type; shape defaults to 1-D. */
  static from(data: TypedArray | readonly number[], shape?: Shape, dtype?: DType): Tensor {
    const dt: DType = dtype ?? (data instanceof Int32Array ? 'i32' : data instanceof Uint32Array ? 'u32' : 'f32');
    const arr = toTyped(data, dt);
    const shp = shape ?? [arr.length];
    if (numel(shp) !== arr.length) throw new Error(`Tensor.from: ${arr.length} values do not fill shape ${shapeStr(shp)}`);
    const t = Tensor.empty(shp, dt);
    if (arr.length) rt().device.queue.writeBuffer(t.buffer, 0, arr.buffer, arr.byteOffset, arr.byteLength);
    markWritten(t.buffer);
    return t;
  }

  /** Overwrite the contents from the host (flushes first so earlier recorded reads see the old data). */
  write(data: TypedArray | readonly number[]): void {
    const arr = toTyped(data, this.dtype);
    if (arr.length !== this.size) throw new Error(`write: ${arr.length} values for tensor ${this.describe()}`);
    rt().queue.flush();
    rt().device.queue.writeBuffer(this.buffer, 0, arr.buffer, arr.byteOffset, arr.byteLength);
    markWritten(this.buffer);
  }

  /**
   * The write version of this tensor's buffer (engine/versions.ts): it changes whenever the engine writes the
   * buffer (a kernel binding it read_write, write(), a copy into it). Views share their buffer's version.
   */
  get version(): number {
    return writeVersion(this.buffer);
  }

  /** A tensor sharing this storage with another shape (no copy, no autograd; see reshape() for the op). */
  view(shape: Shape): Tensor {
    const shp = resolveShape(shape, this.size);
    return new Tensor(this._storage.retain(), shp, this.dtype);
  }

  /**
   * A tensor over the leading numel(shape) elements of this storage (no copy, no autograd): a prefix view, e.g.
   * the rows of a preallocated workspace that one step uses.
   */
  prefixView(shape: Shape): Tensor {
    checkShape(shape);
    if (numel(shape) > this.size) throw new Error(`prefixView: ${shapeStr(shape)} has more elements than ${this.describe()}`);
    return new Tensor(this._storage.retain(), shape, this.dtype);
  }

  /** Same storage, new tensor object, no graph. */
  detach(): Tensor {
    return this.view(this.shape);
  }

  requireGrad(flag = true): this {
    if (flag && this.dtype !== 'f32') throw new Error(`requireGrad: ${this.describe()} is not f32`);
    this.requiresGrad = flag;
    return this;
  }

  /** Release the storage (the buffer returns to the pool once no view uses it). Idempotent. */
  dispose(): void {
    if (!this.storage) return;
    this.storage.release();
    this.storage = null;
    // The graph node stays: backward through a disposed intermediate only needs the node's saved tensors.
    for (const f of frames) f?.delete(this);
  }

  /** Read back (flushes the batch). */
  async toArray(): Promise<TypedArray> {
    const bytes = this.byteLength;
    if (bytes === 0) return makeTyped(this.dtype, 0);
    const ab = await rt().queue.read(this.buffer, this.byteOffset, bytes);
    return this.dtype === 'f32' ? new Float32Array(ab) : this.dtype === 'i32' ? new Int32Array(ab) : new Uint32Array(ab);
  }

  async item(): Promise<number> {
    if (this.size !== 1) throw new Error(`item(): tensor ${this.describe()} has ${this.size} elements`);
    return (await this.toArray())[0]!;
  }
}

let poison: Uint32Array<ArrayBuffer> = new Uint32Array(0);
function poisonBytes(bytes: number): Uint32Array<ArrayBuffer> {
  if (poison.byteLength < bytes) poison = new Uint32Array(bytes / 4).fill(0xffffffff);
  return poison.subarray(0, bytes / 4);
}

export function makeTyped(dtype: DType, n: number): TypedArray {
  return dtype === 'f32' ? new Float32Array(n) : dtype === 'i32' ? new Int32Array(n) : new Uint32Array(n);
}

function toTyped(data: TypedArray | readonly number[], dtype: DType): TypedArray {
  if (dtype === 'f32') return data instanceof Float32Array ? data : Float32Array.from(data);
  if (dtype === 'i32') return data instanceof Int32Array ? data : Int32Array.from(data);
  return data instanceof Uint32Array ? data : Uint32Array.from(data);
}

/** Resolve one -1 entry and check the element count. */
export function resolveShape(shape: Shape, size: number): number[] {
  const out = [...shape];
  const neg = out.indexOf(-1);
  if (neg >= 0) {
    const rest = numel(out.filter((_, i) => i !== neg));
    if (rest === 0 || size % rest !== 0) throw new Error(`cannot reshape ${size} elements into ${shapeStr(shape)}`);
    out[neg] = size / rest;
  }
  checkShape(out);
  if (numel(out) !== size) throw new Error(`cannot reshape ${size} elements into ${shapeStr(shape)}`);
  return out;
}
