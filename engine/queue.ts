// Command batching: one open command encoder and compute pass; every dispatch appends to it. flush() ends the
// pass, uploads this batch's uniforms, submits, and hands pending releases back to the pool.
// Uniforms: each dispatch gets its own slice of a per-batch uniform chunk (a single reused uniform buffer is a
// known bug: queue.writeBuffer lands before the batch runs, so every dispatch would see the last value).
import { flags, log, debugKernel } from './env.js';
import type { BufferPool } from './pool.js';

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
  readonly stats: DispatchStats = { dispatches: 0, submits: 0, readbacks: 0 };
  /** Set by engine/profile.ts: sees every dispatch as it is recorded (the profiler replays them one by one). */
  /** While set (profiling), uniform chunks are kept here instead of returning to the pool. */
  retainUniforms: GPUBuffer[] | null = null;
  onDispatch: ((name: string, pipeline: GPUComputePipeline, bindGroup: GPUBindGroup, grid: readonly [number, number, number]) => void) | null = null;

  constructor(
    private readonly device: GPUDevice,
    private readonly pool: BufferPool,
  ) {}

  private ensureEncoder(): GPUCommandEncoder {
    if (!this.encoder) this.encoder = this.device.createCommandEncoder({ label: 'seqrec.batch' });
    return this.encoder;
  }

  private ensurePass(): GPUComputePassEncoder {
    if (!this.pass) this.pass = this.ensureEncoder().beginComputePass();
    return this.pass;
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
    if (flags.sync) this.device.pushErrorScope('validation');
    const pass = this.ensurePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(grid[0], grid[1], grid[2]);
    this.stats.dispatches++;
    this.inBatch++;
    if (debugKernel(name, 2)) log(`dispatch ${name} grid=[${grid.join(',')}]`);
    if (flags.sync) {
      this.flush();
      const scope = this.device.popErrorScope();
      this.syncChain = this.syncChain.then(async () => {
        const err = await scope;
        await this.device.queue.onSubmittedWorkDone();
        if (err) this.errors.push(new Error(`kernel ${name}: ${err.message}`));
      });
    } else if (this.onDispatch) this.onDispatch(name, pipeline, bindGroup, grid);
    if (!flags.sync && (this.inBatch >= flags.flushEvery || this.pool.pendingBytes > PENDING_FLUSH_BYTES)) this.flush();
  }

  /** Buffer-to-buffer copy inside the batch (ends the open compute pass). */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.endPass();
    this.ensureEncoder().copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
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
      this.pool.onSubmitted(); // nothing unsubmitted can use the pending buffers
      return;
    }
    this.endPass();
    for (const c of this.chunks) this.device.queue.writeBuffer(c.buffer, 0, c.data, 0, c.used);
    if (this.encoder) {
      this.device.queue.submit([this.encoder.finish()]);
      this.stats.submits++;
    }
    if (flags.debug >= 1 && !flags.sync) log(`flush: ${this.inBatch} dispatches`);
    for (const c of this.chunks) {
      if (this.retainUniforms) this.retainUniforms.push(c.buffer);
      else this.pool.release(c.buffer);
    }
    this.chunks = [];
    this.encoder = null;
    this.inBatch = 0;
    this.pool.onSubmitted();
  }

  /** Flush and wait until the GPU has finished everything submitted; throws errors found along the way. */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    await this.syncChain;
    this.throwPending();
  }

  throwPending(): void {
    if (this.errors.length) {
      const e = this.errors.shift()!;
      this.errors = [];
      throw e;
    }
  }

  /** Read `bytes` from `src` at `offset` (flushes the batch first). */
  async read(src: GPUBuffer, offset: number, bytes: number): Promise<ArrayBuffer> {
    const size = Math.ceil(bytes / 4) * 4;
    const staging = this.pool.acquire(size, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, 'seqrec.readback');
    this.copy(src, offset, staging, 0, size);
    this.flush();
    this.stats.readbacks++;
    try {
      await staging.mapAsync(GPUMapMode.READ, 0, size);
      const out = staging.getMappedRange(0, size).slice(0, bytes);
      staging.unmap();
      return out;
    } finally {
      this.pool.release(staging); // reusable after the next flush
      await this.syncChain;
      this.throwPending();
    }
  }
}
