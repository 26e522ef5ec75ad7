// The per-device runtime: buffer pool, command queue and pipeline cache, created on first use of the current
// device and dropped when it is destroyed.
import { getGpu, registerDeviceReset, type Gpu } from './gpu.js';
import { BufferPool } from './pool.js';
import { Queue } from './queue.js';

export interface Runtime {
  readonly gpu: Gpu;
  readonly device: GPUDevice;
  readonly pool: BufferPool;
  readonly queue: Queue;
  readonly pipelines: Map<string, unknown>;
}

let current: Runtime | null = null;

registerDeviceReset(() => {
  if (!current) return;
  try {
    current.queue.flush();
  } finally {
    current.pool.destroy();
    current.pipelines.clear();
    current = null;
  }
});

export function rt(): Runtime {
  const gpu = getGpu();
  if (!current || current.device !== gpu.device) {
    const pool = new BufferPool(gpu.device);
    const queue = new Queue(gpu.device, pool);
    current = { gpu, device: gpu.device, pool, queue, pipelines: new Map() };
    // Errors outside a batch's scope (a write to a destroyed buffer, an allocation failure) are thrown at the next
    // sync/readback too, not only printed.
    gpu.device.addEventListener('uncapturederror', (ev) => queue.pushUncaptured((ev as GPUUncapturedErrorEvent).error));
  }
  return current;
}

/** Submit everything recorded so far (no wait). */
export function flush(): void {
  current?.queue.flush();
}

/** Submit and wait for the GPU; throws the first error found by SYNC mode or a failed compile. */
export async function sync(): Promise<void> {
  if (current) await current.queue.sync();
}
