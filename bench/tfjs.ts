// The tfjs-backend-webgpu peer: tfjs running on OUR device (the same adapter, queue and process), so every
// bench file can time the same math in tfjs side by side with our kernels.
// - The backend is registered as 'webgpu' (tfjs's kernels are registered under that name) with
//   `new WebGPUBackend(device, adapterInfo)`; tfjs's own factory needs navigator.gpu, which Node 20 lacks, and the
//   constructor checks for it (a stub is provided for the duration of that call only).
// - WEBGPU_CPU_FORWARD=false: otherwise tfjs computes small tensors on the CPU (ENVIRONMENT.md).
// - tfjs batches its commands (WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE): tfjsSync() submits them and waits on the
//   shared queue, so a timed tfjs run is GPU-synchronised exactly like ours.
import type * as TF from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { getGpu, initGpu } from '../engine/index.js';

export type Tfjs = typeof TF;

let pending: Promise<Tfjs> | null = null;
let loaded: Tfjs | null = null;

async function load(): Promise<Tfjs> {
  const gpu = await initGpu();
  if (!gpu.adapter) throw new Error('tfjs peer: the engine adopted an external device without its adapter; tfjs needs adapter.info');
  // Both packages are CommonJS bundles in Node; the default export is the module object.
  const core = (await import('@tensorflow/tfjs-core')) as unknown as Tfjs & { default?: Tfjs };
  const tf: Tfjs = core.default ?? core;
  const wg = (await import('@tensorflow/tfjs-backend-webgpu')) as unknown as { WebGPUBackend?: typeof WebGPUBackend; default?: { WebGPUBackend: typeof WebGPUBackend } };
  const Backend = wg.WebGPUBackend ?? wg.default?.WebGPUBackend;
  if (!Backend) throw new Error('tfjs peer: @tensorflow/tfjs-backend-webgpu exports no WebGPUBackend');
  tf.env().set('WEBGPU_CPU_FORWARD', false);
  if (tf.findBackendFactory('webgpu')) tf.removeBackend('webgpu');
  const device = gpu.device;
  const info = gpu.adapter.info;
  tf.registerBackend('webgpu', () => withNavigatorGpu(() => new Backend(device, info)));
  if (!(await tf.setBackend('webgpu'))) throw new Error('tfjs peer: tf.setBackend("webgpu") failed');
  await tf.ready();
  loaded = tf;
  return tf;
}

/**
 * WebGPUBackend's constructor insists on `navigator.gpu` (it never uses it when handed a device). Provide a stub
 * only for the call: a lasting navigator.gpu would keep Node from exiting (the npm webgpu README's warning).
 */
function withNavigatorGpu<T>(fn: () => T): T {
  const g = globalThis as { navigator?: { gpu?: unknown } };
  if (g.navigator?.gpu) return fn();
  const hadNavigator = g.navigator !== undefined;
  if (hadNavigator) Object.defineProperty(g.navigator, 'gpu', { value: {}, configurable: true });
  else Object.defineProperty(globalThis, 'navigator', { value: { gpu: {} }, configurable: true, writable: true });
  try {
    return fn();
  } finally {
    if (hadNavigator) delete g.navigator!.gpu;
    else delete g.navigator;
  }
}

/** tfjs with its WebGPU backend on the engine's device (initialised once). */
export function getTfjs(): Promise<Tfjs> {
  pending ??= load();
  return pending;
}

/** Submit tfjs's batched commands and wait until the shared queue is idle. */
export async function tfjsSync(): Promise<void> {
  const tf = await getTfjs();
  submit(tf.backend() as unknown as WebGPUBackend);
  await getGpu().device.queue.onSubmittedWorkDone();
}

/** Submit tfjs's batched commands now (no wait): a timed run ends with this, the runner's sync() waits. */
export function tfjsSubmit(): void {
  if (!loaded) throw new Error('tfjs peer: tfjsSubmit() before getTfjs() resolved');
  submit(loaded.backend() as unknown as WebGPUBackend);
}

function submit(backend: WebGPUBackend): void {
  // tfjs's own flush order (backend_webgpu.ts): end the open compute pass, then finish and submit the encoder.
  backend.ensureCommandEncoderReady();
  backend.endComputePassEncoder();
  backend.submitQueue();
}
