// Buffer pool: free lists keyed by (size class, usage), as tfjs's BufferManager and tinygrad's LRUAllocator.
// A released buffer is "pending" until the work that may still use it has been submitted; flush() returns it.
// Size classes are 2^k * {1, 1.25, 1.5, 1.75} (at most 25% slack), so varying batch sizes still hit the pool.
import { flags } from './env.js';
import { markWritten } from './versions.js';

export interface PoolStats {
  /** Bytes of all live GPU buffers created by the pool (free, pending and in use). */
  allocatedBytes: number;
  /** Bytes handed out and not yet released. */
  inUseBytes: number;
  /** Highest allocatedBytes seen. */
  peakBytes: number;
  /** Number of live buffers. */
  buffers: number;
  /** acquire() served from a free list / by a new buffer. */
  hits: number;
  misses: number;
}

export function sizeClass(bytes: number): number {
  const b = Math.max(16, Math.ceil(bytes / 16) * 16);
  if (b <= 256) return b;
  const p = 2 ** Math.floor(Math.log2(b));
  for (const f of [1, 1.25, 1.5, 1.75, 2]) {
    const c = p * f;
    if (c >= b) return c;
  }
  return 2 * p;
}

export class BufferPool {
  private free = new Map<string, GPUBuffer[]>();
  private pending: GPUBuffer[] = [];
  private live = new Set<GPUBuffer>();
  /** Bytes released since the last submit (not reusable yet). */
  pendingBytes = 0;
  private s: PoolStats = { allocatedBytes: 0, inUseBytes: 0, peakBytes: 0, buffers: 0, hits: 0, misses: 0 };

  constructor(private readonly device: GPUDevice) {}

  acquire(bytes: number, usage: number, label?: string): GPUBuffer {
    const size = sizeClass(bytes);
    const max = this.device.limits.maxBufferSize;
    if (size > max) throw new Error(`buffer of ${bytes} bytes exceeds the device's maxBufferSize (${max})`);
    const key = `${size}:${usage}`;
    let buf = flags.pool ? this.free.get(key)?.pop() : undefined;
    if (buf) this.s.hits++;
    else {
      this.s.misses++;
      buf = this.device.createBuffer({ size, usage, label: label ?? 'seqrec' });
      this.live.add(buf);
      this.s.allocatedBytes += size;
      this.s.buffers++;
      this.s.peakBytes = Math.max(this.s.peakBytes, this.s.allocatedBytes);
    }
    this.s.inUseBytes += size;
    markWritten(buf); // a new owner: whatever was derived from the buffer's old contents is stale
    return buf;
  }

  /** Give a buffer back; it becomes reusable at the next flush (after the work using it is submitted). */
  release(buf: GPUBuffer): void {
    if (!this.live.has(buf)) throw new Error(`pool: release of a buffer the pool does not own (${buf.label})`);
    this.s.inUseBytes -= buf.size;
    this.pendingBytes += buf.size;
    this.pending.push(buf);
  }

  /**
   * While set (engine/profile.ts), released buffers are parked here instead of returning to the free lists, so
   * that no later allocation reuses a buffer a recorded dispatch still binds; `releaseHeld()` returns them.
   */
  held: GPUBuffer[] | null = null;

  releaseHeld(): void {
    const h = this.held ?? [];
    this.held = null;
    this.pending.push(...h);
    this.onSubmitted();
  }

  /** Called by the queue right after submit. */
  onSubmitted(): void {
    if (this.held) {
      this.held.push(...this.pending);
      this.pending = [];
      this.pendingBytes = 0;
      return;
    }
    for (const buf of this.pending) {
      if (!flags.pool) {
        this.destroyOne(buf);
        continue;
      }
      const key = `${buf.size}:${buf.usage}`;
      let list = this.free.get(key);
      if (!list) this.free.set(key, (list = []));
      list.push(buf);
    }
    this.pending = [];
    this.pendingBytes = 0;
  }

  private destroyOne(buf: GPUBuffer): void {
    this.live.delete(buf);
    this.s.allocatedBytes -= buf.size;
    this.s.buffers--;
    buf.destroy();
  }

  /** Destroy every free buffer (memory back to the driver); in-use buffers are untouched. */
  trim(): void {
    for (const list of this.free.values()) for (const b of list) this.destroyOne(b);
    this.free.clear();
  }

  stats(): PoolStats {
    return { ...this.s };
  }

  destroy(): void {
    for (const b of this.live) b.destroy();
    this.live.clear();
    this.free.clear();
    this.pending = [];
  }
}
