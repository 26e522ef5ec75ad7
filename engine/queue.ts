// Command batching: one open command encoder and compute pass; every dispatch appends to it. flush() ends the
// pass, uploads this batch's uniforms, submits, and hands pending releases back to the pool.
// Uniforms: each dispatch gets its own slice of a per-batch uniform chunk (a single reused uniform buffer is a
// known bug: queue.writeBuffer lands before the batch runs, so every dispatch would see the last value).
// Errors: each batch runs inside one validation + one out-of-memory error scope (opened with the batch, closed
// right after its submit; SYNC=1 makes every dispatch its own batch). A scope's error, an uncaptured error and a
// lost device are thrown at the next sync()/readback as an Error naming the kernels of the failed batch.
// Check flags (engine/checks.ts: ids out of range, non-finite values) are small GPU buffers written by check
// kernels; a readback copies the dirty ones into the same staging buffer, so checking costs no extra map.
// GPU timing (off by default; the bench runner turns it on with enableTimestamps() where the device has
// 'timestamp-query'): every compute pass gets timestampWrites, each flush resolves its batch's queries into a
// mapped buffer, and takeGpuTime() returns the summed pass durations since the last call.
import { flags, log, debugKernel, debugKernels } from './env.js';
import type { BufferPool } from './pool.js';
import { markWritten } from './versions.js';

const UNIFORM_CHUNK = 1 << 16;
const UNIFORM_ALIGN = 256;
// Released buffers are reusable only after a submit: past this many pending bytes, submit early so memory
// does not grow with the batch.
const PENDING_FLUSH_BYTES = 32 << 20; // minUniformBufferOffsetAlignment is 256 on most real GPUs

interface UniformChunk {
  buffer: GPUBuffer;
  data: Uint8Array<ArrayBuffer>;
  used: number;
}

/** A small GPU flag buffer written by check kernels, read (and reset) at the next sync/readback. */
export interface FlagSource {
  readonly buffer: GPUBuffer;
  /** Byte size (a multiple of 4) of the flag words. */
  readonly bytes: number;
  /** Contents after a reset (written right after each read). */
  readonly init: Uint32Array<ArrayBuffer>;
  /** The error the read words report, or null. */
  decode(words: Uint32Array): Error | null;
  /** Called when the read is recorded (synchronously, before anything else can be recorded). */
  onRead?(): void;
}

/** The GPU device was lost (destroyed, driver reset, out of memory): nothing more can run on it. */
export class DeviceLostError extends Error {
  constructor(readonly reason: string, detail: string) {
    super(`GPU device lost (${reason}): ${detail || 'no message'}. Re-create it with initGpu() (after destroyGpu()).`);
    this.name = 'DeviceLostError';
  }
}

/** A WebGPU validation / out-of-memory / internal error of a submitted batch; `kernels` names its dispatches. */
export class GpuError extends Error {
  constructor(readonly kind: string, readonly kernels: readonly string[], detail: string) {
    const where = kernels.length === 1 && !kernels[0]!.includes(' x') ? `kernel ${kernels[0]}` : `a batch with kernels [${kernels.join(', ') || 'none: copies / writes only'}]`;
    super(`GPU ${kind} error in ${where}: ${detail}`);
    this.name = 'GpuError';
  }
}

const MAX_NAMES = 16;
/** Timestamp queries per batch (two per compute pass); passes beyond it run untimed (counted). */
const TIMESTAMP_QUERIES = 4096;

interface PassTimer {
  querySet: GPUQuerySet;
  resolve: GPUBuffer;
  /** Queries written by the open batch. */
  used: number;
  /** Readbacks of flushed batches, each adding its pass durations to ns. */
  pending: Promise<void>[];
  ns: number;
  untimed: number;
}

export interface DispatchStats {
  dispatches: number;
  submits: number;
  readbacks: number;
}

export class Queue {
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private inBatch = 0;
  private chunks: UniformChunk[] = [];
  private errors: Error[] = [];
  private syncChain: Promise<void> = Promise.resolve();
  /** Error scopes of the open batch are pushed (validation inside out-of-memory). */
  private scopeOpen = false;
  /** Kernel names of the open batch (dispatch counts), for error messages. */
  private batchNames = new Map<string, number>();
  private dirtyFlags = new Set<FlagSource>();
  private lostInfo: { reason: string; message: string } | null = null;
  private timer: PassTimer | null = null;
  private readonly lostPromise: Promise<DeviceLostError>;
  readonly stats: DispatchStats = { dispatches: 0, submits: 0, readbacks: 0 };
  /** Set by engine/profile.ts: sees every dispatch as it is recorded (the profiler replays them one by one). */
  /** While set (profiling), uniform chunks are kept here instead of returning to the pool. */
  retainUniforms: GPUBuffer[] | null = null;
  onDispatch: ((name: string, pipeline: GPUComputePipeline, bindGroup: GPUBindGroup, grid: readonly [number, number, number]) => void) | null = null;

  constructor(
    private readonly device: GPUDevice,
    private readonly pool: BufferPool,
  ) {
    this.lostPromise = device.lost.then((info) => {
      this.lostInfo = { reason: info.reason ?? 'unknown', message: info.message };
      return new DeviceLostError(this.lostInfo.reason, info.message);
    });
  }

  /** The device-lost error once the device is gone (null while it works). */
  get lost(): DeviceLostError | null {
    return this.lostInfo ? new DeviceLostError(this.lostInfo.reason, this.lostInfo.message) : null;
  }

  private throwIfLost(): void {
    const e = this.lost;
    if (e) throw e;
  }

  /** Open the batch's error scopes (idempotent): called before the batch's first bind group / command. */
  openScope(): void {
    if (this.scopeOpen) return;
    this.device.pushErrorScope('out-of-memory');
    this.device.pushErrorScope('validation');
    this.scopeOpen = true;
  }

  private closeScope(): void {
    if (!this.scopeOpen) return;
    this.scopeOpen = false;
    const names = this.batchNamesList();
    this.batchNames = new Map();
    const pops = [this.device.popErrorScope(), this.device.popErrorScope()];
    const check = Promise.all(pops.map((p) => p.catch(() => null))).then((errs) => {
      for (const err of errs) if (err) this.errors.push(new GpuError(errorKind(err), names, err.message));
    });
    this.syncChain = Promise.all([this.syncChain, check]).then(() => undefined);
  }

  private batchNamesList(): string[] {
    const out: string[] = [];
    for (const [n, c] of this.batchNames) {
      if (out.length === MAX_NAMES) {
        out.push(`... ${this.batchNames.size - MAX_NAMES} more`);
        break;
      }
      out.push(c > 1 ? `${n} x${c}` : n);
    }
    return out;
  }

  /** An error reported outside a batch scope (the device's uncapturederror event). */
  pushUncaptured(err: GPUError): void {
    this.errors.push(new GpuError(errorKind(err), this.batchNamesList(), err.message));
  }

  /** Mark a flag buffer as written by the open batch: it is read at the next sync/readback. */
  markFlag(f: FlagSource): void {
    this.dirtyFlags.add(f);
  }

  private ensureEncoder(): GPUCommandEncoder {
    this.openScope();
    if (!this.encoder) this.encoder = this.device.createCommandEncoder({ label: 'seqrec.batch' });
    return this.encoder;
  }

  private ensurePass(): GPUComputePassEncoder {
    if (!this.pass) {
      const t = this.timer;
      if (t && t.used + 2 > TIMESTAMP_QUERIES) t.untimed++;
      const timed = t !== null && t.used + 2 <= TIMESTAMP_QUERIES;
      this.pass = this.ensureEncoder().beginComputePass(
        timed ? { timestampWrites: { querySet: t.querySet, beginningOfPassWriteIndex: t.used, endOfPassWriteIndex: t.used + 1 } } : undefined,
      );
      if (timed) t.used += 2;
    }
    return this.pass;
  }

  /**
   * GPU timing of every compute pass (benchmarks only; costs a query resolve and a readback per batch). Returns
   * false, and stays off, when the device lacks 'timestamp-query'.
   */
  enableTimestamps(on = true): boolean {
    if (!on || !this.device.features.has('timestamp-query')) {
      this.flush();
      this.timer?.querySet.destroy();
      this.timer?.resolve.destroy();
      this.timer = null;
      return !on;
    }
    if (!this.timer) {
      this.flush(); // passes already recorded stay untimed
      this.timer = {
        querySet: this.device.createQuerySet({ type: 'timestamp', count: TIMESTAMP_QUERIES, label: 'seqrec.timestamps' }),
        resolve: this.device.createBuffer({ size: TIMESTAMP_QUERIES * 8, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC, label: 'seqrec.timestamps' }),
        used: 0, pending: [], ns: 0, untimed: 0,
      };
    }
    return true;
  }

  /** Summed GPU time (ms) of the compute passes submitted since the last call, and how many passes went untimed. */
  async takeGpuTime(): Promise<{ ms: number; untimedPasses: number }> {
    const t = this.timer;
    if (!t) throw new Error('queue: takeGpuTime() without enableTimestamps()');
    this.flush();
    while (t.pending.length) await Promise.all(t.pending.splice(0));
    const r = { ms: t.ns / 1e6, untimedPasses: t.untimed };
    t.ns = 0;
    t.untimed = 0;
    return r;
  }

  /** Resolve the open batch's timestamps into a staging buffer (recorded before the batch's submit). */
  private resolveTimestamps(enc: GPUCommandEncoder): (() => void) | null {
    const t = this.timer;
    if (!t || t.used === 0) return null;
    const n = t.used;
    t.used = 0;
    const staging = this.device.createBuffer({ size: n * 8, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: 'seqrec.timestamps.read' });
    enc.resolveQuerySet(t.querySet, 0, n, t.resolve, 0);
    enc.copyBufferToBuffer(t.resolve, 0, staging, 0, n * 8);
    return () => {
      const done = staging.mapAsync(GPUMapMode.READ).then(() => {
        const q = new BigUint64Array(staging.getMappedRange());
        for (let i = 0; i + 1 < n; i += 2) if (q[i + 1]! > q[i]!) t.ns += Number(q[i + 1]! - q[i]!);
        staging.unmap();
        staging.destroy();
      });
      t.pending.push(done);
    };
  }

  private endPass(): void {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
  }

  /** Copy `data` into this batch's uniform memory; returns the binding resource for the dispatch. */
  uniform(data: Uint8Array): GPUBufferBinding {
    const size = Math.ceil(data.byteLength / 16) * 16;
    let c = this.chunks[this.chunks.length - 1];
    if (!c || c.used + size > c.data.byteLength) {
      const bytes = Math.max(UNIFORM_CHUNK, size);
      c = {
        buffer: this.pool.acquire(bytes, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, 'seqrec.uniforms'),
        data: new Uint8Array(bytes),
        used: 0,
      };
      this.chunks.push(c);
    }
    const offset = c.used;
    c.data.set(data, offset);
    c.used = Math.ceil((offset + size) / UNIFORM_ALIGN) * UNIFORM_ALIGN;
    return { buffer: c.buffer, offset, size };
  }

  dispatch(name: string, pipeline: GPUComputePipeline, bindGroup: GPUBindGroup, grid: readonly [number, number, number]): void {
    this.throwIfLost();
    const pass = this.ensurePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(grid[0], grid[1], grid[2]);
    this.stats.dispatches++;
    this.inBatch++;
    this.batchNames.set(name, (this.batchNames.get(name) ?? 0) + 1);
    if (debugKernel(name, 2)) log(`dispatch ${name} grid=[${grid.join(',')}]`);
    if (flags.sync) {
      // Every dispatch is its own batch, so a failing kernel's error names it alone.
      this.flush();
      const done = this.device.queue.onSubmittedWorkDone();
      this.syncChain = Promise.all([this.syncChain, done]).then(() => undefined);
    } else if (this.onDispatch) this.onDispatch(name, pipeline, bindGroup, grid);
    if (!flags.sync && (this.inBatch >= flags.flushEvery || this.pool.pendingBytes > PENDING_FLUSH_BYTES)) this.flush();
  }

  /** Buffer-to-buffer copy inside the batch (ends the open compute pass). */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.endPass();
    this.ensureEncoder().copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
    markWritten(dst);
  }

  /** Track an async check (a pipeline's compile result); its error is thrown at the next sync point. */
  pushPending(p: Promise<void>): void {
    const guarded = p.catch((e: unknown) => {
      const err = e instanceof Error ? e : new Error(String(e));
      log(err.message);
      this.errors.push(err);
    });
    this.syncChain = Promise.all([this.syncChain, guarded]).then(() => undefined);
  }

  /** Record an error found at encode time (a compile error, say) to be thrown at the next sync point. */
  pushError(e: Error): void {
    this.errors.push(e);
  }

  flush(): void {
    if (!this.encoder && this.chunks.length === 0) {
      this.closeScope(); // bind groups may have been created (and failed) without a dispatch
      this.pool.onSubmitted(); // nothing unsubmitted can use the pending buffers
      return;
    }
    this.endPass();
    for (const c of this.chunks) this.device.queue.writeBuffer(c.buffer, 0, c.data, 0, c.used);
    if (this.encoder) {
      const readTimestamps = this.resolveTimestamps(this.encoder);
      this.device.queue.submit([this.encoder.finish()]);
      this.stats.submits++;
      readTimestamps?.();
    }
    if (!flags.sync && debugKernels(this.batchNames.keys(), 1)) log(`flush: ${this.inBatch} dispatches`);
    for (const c of this.chunks) {
      if (this.retainUniforms) this.retainUniforms.push(c.buffer);
      else this.pool.release(c.buffer);
    }
    this.chunks = [];
    this.encoder = null;
    this.inBatch = 0;
    this.closeScope();
    this.pool.onSubmitted();
  }

  /** Wait for p, or fail with the device-lost error if the device goes away first (no hang). */
  private untilLost<T>(p: Promise<T>): Promise<T> {
    return Promise.race([p, this.lostPromise.then((e) => Promise.reject(e))]);
  }

  /** Flush and wait until the GPU has finished everything submitted; throws errors found along the way. */
  async sync(): Promise<void> {
    this.throwIfLost();
    if (this.dirtyFlags.size) {
      await this.read(null, 0, 0);
      return;
    }
    this.flush();
    await this.untilLost(this.device.queue.onSubmittedWorkDone());
    await this.syncChain;
    this.throwPending();
  }

  /**
   * Throw the most fundamental pending error and drop the rest: a WGSL compile error first (an invalid pipeline
   * also makes its batch fail validation), then the batches' GPU errors (they make every later value
   * meaningless), then the check flags'.
   */
  throwPending(): void {
    if (this.errors.length) {
      const rank = (e: Error): number => (e.name === 'WgslCompileError' ? 0 : e instanceof GpuError ? 1 : 2);
      const e = this.errors.reduce((a, b) => (rank(b) < rank(a) ? b : a));
      this.errors = [];
      throw e;
    }
  }

  /**
   * Read `bytes` from `src` at `offset` (flushes the batch first). The dirty check flags ride along in the same
   * staging buffer; their errors (and the batch's GPU errors) are thrown after the data arrived.
   */
  async read(src: GPUBuffer | null, offset: number, bytes: number): Promise<ArrayBuffer> {
    this.throwIfLost();
    const size = Math.ceil(bytes / 4) * 4;
    const fl = [...this.dirtyFlags];
    this.dirtyFlags.clear();
    let total = size;
    for (const f of fl) total += f.bytes;
    const staging = this.pool.acquire(Math.max(total, 4), GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, 'seqrec.readback');
    if (src && size) this.copy(src, offset, staging, 0, size);
    let at = size;
    for (const f of fl) {
      this.copy(f.buffer, 0, staging, at, f.bytes);
      at += f.bytes;
    }
    this.flush();
    for (const f of fl) {
      this.device.queue.writeBuffer(f.buffer, 0, f.init); // after the copy above (queue order)
      markWritten(f.buffer);
      f.onRead?.();
    }
    this.stats.readbacks++;
    let mapped = false;
    try {
      await this.untilLost(staging.mapAsync(GPUMapMode.READ, 0, Math.max(total, 4)));
      mapped = true;
      const all = staging.getMappedRange(0, Math.max(total, 4));
      const out = all.slice(0, bytes);
      let pos = size;
      for (const f of fl) {
        const err = f.decode(new Uint32Array(all.slice(pos, pos + f.bytes)));
        if (err) this.errors.push(err);
        pos += f.bytes;
      }
      staging.unmap();
      mapped = false;
      return out;
    } catch (e) {
      const lost = this.lost;
      if (lost) throw lost;
      throw e;
    } finally {
      if (mapped) staging.unmap();
      if (!this.lostInfo) {
        this.pool.release(staging); // reusable after the next flush
        await this.syncChain;
        this.throwPending();
      }
    }
  }
}

function errorKind(err: GPUError): string {
  const n = err.constructor?.name ?? '';
  return n === 'GPUOutOfMemoryError' ? 'out-of-memory' : n === 'GPUInternalError' ? 'internal' : 'validation';
}
