// The tfjs-backend-webgpu peer: tfjs running on OUR device (the same adapter, queue and process), so every
// bench file can time the same math in tfjs side by side with our kernels.
// - The backend is registered as 'webgpu' (tfjs's kernels are registered under that name) with
//   `new WebGPUBackend(device, adapterInfo)`; tfjs's own factory needs navigator.gpu, which Node 20 lacks, and the
//   constructor checks for it (a stub is provided for the duration of that call only).
// - WEBGPU_CPU_FORWARD=false: otherwise tfjs computes small tensors on the CPU (ENVIRONMENT.md).
// - Gradients: tfjs-core's Node bundle registers none (the union package @tensorflow/tfjs imports
//   dist/register_all_gradients, an ESM tree with extensionless imports Node cannot load). load() bundles that file
//   with esbuild (the bundler tsx runs on, so present wherever the benches run) and evaluates it once: the kernel
//   and gradient registries live on globalThis, so tfjs's own gradient definitions land in this tfjs's registry.
// - tfjs batches its commands (WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE): tfjsSync() submits them and waits on the
//   shared queue, so a timed tfjs run is GPU-synchronised exactly like ours.
import type * as TF from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { createRequire } from 'node:module';
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
  await registerAllGradients(tf);
  loaded = tf;
  return tf;
}

async function registerAllGradients(tf: Tfjs): Promise<void> {
  if (tf.getGradient('BatchMatMul')) return;
  const req = createRequire(import.meta.url);
  const { build } = (await import('esbuild')) as typeof import('esbuild');
  const out = await build({
    entryPoints: [req.resolve('@tensorflow/tfjs-core/dist/register_all_gradients.js')],
    bundle: true,
    write: false,
    format: 'cjs',
    platform: 'node',
    logLevel: 'silent',
  });
  new Function('require', 'module', 'exports', out.outputFiles[0]!.text)(req, { exports: {} }, {});
  const probe = tf.grads((x: TF.Tensor) => tf.sum(tf.mul(x, x)))([tf.scalar(3)])[0]!;
  const v = (await probe.data())[0];
  probe.dispose();
  if (v !== 6) throw new Error(`tfjs peer: gradient registration failed (d/dx x^2 at 3 gave ${v})`);
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
