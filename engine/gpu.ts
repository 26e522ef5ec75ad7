/// <reference types="@webgpu/types" preserve="true" />
// Device acquisition. One device is "current" at a time (like tfjs's backend): kernels, the queue and the pool
// all run on it. Order: a caller's own GPUDevice > a forced backend (SEQREC_BACKEND) > the default backend with a
// core adapter > Dawn's OpenGL ES backend at compatibility level (Mesa llvmpipe on GPU-less Linux machines).
import { flags, log } from './env.js';

export type FeatureLevel = 'core' | 'compatibility';

export interface GpuInfo {
  backend: string;
  featureLevel: FeatureLevel;
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  limits: Record<string, number>;
  features: string[];
  /** Mesa's software adapters under Node: the LP_NUM_THREADS the driver started with (the engine's default: 4 per core). */
  softwareThreads?: number;
}

export interface Gpu {
  readonly device: GPUDevice;
  readonly adapter: GPUAdapter | null;
  readonly info: GpuInfo;
}

export interface InitOptions {
  /** Use this device (a browser's, or an app's own). The engine never destroys a device it did not create. */
  device?: GPUDevice;
  /** The adapter the device came from, if known (only used for `info`). */
  adapter?: GPUAdapter;
  /** Force a Dawn backend in Node ('vulkan', 'opengles', 'metal', 'd3d12', ...). Default: SEQREC_BACKEND. */
  backend?: string;
}

/** Limits the kernels want at the adapter's maximum (compat mode's defaults are far lower). */
const WANTED_LIMITS = [
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupStorageSize',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxUniformBufferBindingSize',
  'maxBindingsPerBindGroup',
] as const;

export const INSTALL_HINT =
  'On Debian/Ubuntu without a GPU, install Mesa (EGL + llvmpipe) with:\n' +
  '  apt-get install -y --no-install-recommends libegl-dev libegl-mesa0 libgl1-mesa-dri\n' +
  'and make sure the npm package `webgpu` is installed (npm ci). Set DEBUG=1 to see each attempt.';

let current: Gpu | null = null;
let ownsDevice = false;
// dawn.node's instance must stay referenced for the life of the device: if it is garbage-collected the process
// crashes or hangs at the next event poll (ENVIRONMENT.md).
const dawnInstances: unknown[] = [];
const onDestroy: Array<() => void> = [];

/** Called by the queue/pool/kernel cache so they reset when the device goes away. */
export function registerDeviceReset(fn: () => void): void {
  onDestroy.push(fn);
}

function limitsOf(src: GPUSupportedLimits): Record<string, number> {
  const out: Record<string, number> = {};
  // GPUSupportedLimits exposes getters on the prototype: for..in sees them, Object.keys does not.
  for (const k in src) {
    const v = (src as unknown as Record<string, unknown>)[k];
    if (typeof v === 'number') out[k] = v;
  }
  return out;
}

function makeInfo(device: GPUDevice, adapter: GPUAdapter | null, backend: string, level: FeatureLevel): GpuInfo {
  const ai = (adapter?.info ?? (device as unknown as { adapterInfo?: GPUAdapterInfo }).adapterInfo) as
    | GPUAdapterInfo
    | undefined;
  return {
    backend,
    featureLevel: level,
    vendor: ai?.vendor ?? '',
    architecture: ai?.architecture ?? '',
    device: ai?.device ?? '',
    description: ai?.description ?? '',
    limits: limitsOf(device.limits),
    features: [...device.features].map(String).sort(),
  };
}

async function requestDevice(adapter: GPUAdapter): Promise<GPUDevice> {
  const requiredLimits: Record<string, number> = {};
  for (const k of WANTED_LIMITS) {
    const v = (adapter.limits as unknown as Record<string, number | undefined>)[k];
    if (typeof v === 'number') requiredLimits[k] = v;
  }
  const requiredFeatures: GPUFeatureName[] = [];
  for (const f of ['timestamp-query', 'shader-f16', 'subgroups'] as const) {
    if (adapter.features.has(f)) requiredFeatures.push(f as GPUFeatureName);
  }
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures, label: 'seqrec' });
  if (flags.debug >= 1) logLimits(adapter, device, requiredLimits, requiredFeatures);
  return device;
}

/**
 * DEBUG >= 1: what was requested and what the device got. Also names the limits Dawn itself capped when it
 * created the adapter: Dawn prints "Warning: maxDynamic{Uniform,Storage}BuffersPerPipelineLayout artificially
 * reduced from N to 16" on stderr from native code at requestAdapter() (Mesa's GL reports 90 and 80 UBO/SSBO
 * bindings; Dawn's internal maximum is 16) whatever the requested limits are; bin/seqrec.js filters those two
 * lines unless DEBUG is set. The kernels use no dynamic offsets, so the cap costs nothing.
 */
function logLimits(adapter: GPUAdapter, device: GPUDevice, requested: Record<string, number>, features: GPUFeatureName[]): void {
  const dev = device.limits as unknown as Record<string, number>;
  const ad = adapter.limits as unknown as Record<string, number>;
  const parts = Object.entries(requested).map(([k, v]) => `${k}=${v}${dev[k] !== v ? ` (got ${dev[k]})` : ''}`);
  log(`requested limits: ${parts.join(', ') || '(none)'}`);
  log(`requested features: ${features.join(', ') || '(none)'}`);
  const capped = ['maxDynamicUniformBuffersPerPipelineLayout', 'maxDynamicStorageBuffersPerPipelineLayout']
    .filter((k) => ad[k] === DAWN_MAX_DYNAMIC_BUFFERS)
    .map((k) => `${k}=${ad[k]}`);
  if (capped.length) log(`adapter limits at Dawn's internal maximum (Dawn may have printed 'artificially reduced' for them): ${capped.join(', ')}`);
}

/** Dawn's kMaxDynamic{Uniform,Storage}BuffersPerPipelineLayout. */
const DAWN_MAX_DYNAMIC_BUFFERS = 16;

interface Attempt {
  backend: string;
  level: FeatureLevel;
}

/**
 * Why the default-backend (Vulkan, core) probe is pointless on this machine, or null when it is worth trying.
 * On Linux Dawn's default backend is Vulkan. Without a loader (libvulkan.so.1) or without any driver manifest
 * (ICD json) it can only fail, noisily ("vkCreateInstance: Found no drivers!" on stderr); with only Mesa's
 * lavapipe Dawn rejects the adapter after creating it (slower start, same result). In those cases the probe is
 * skipped and the OpenGL ES compatibility adapter is used directly. VK_ICD_FILENAMES / VK_DRIVER_FILES /
 * VK_ADD_DRIVER_FILES (a driver chosen on purpose, e.g. SwiftShader) always probe; SEQREC_BACKEND=vulkan forces it.
 */
async function vulkanProbeSkipReason(): Promise<string | null> {
  const proc = (globalThis as { process?: { platform?: string; env: Record<string, string | undefined> } }).process;
  if (proc?.platform !== 'linux') return null;
  const env = proc.env;
  if (env.VK_ICD_FILENAMES || env.VK_DRIVER_FILES || env.VK_ADD_DRIVER_FILES) return null;
  const { existsSync, readdirSync } = await import('node:fs');
  const libDirs = [
    ...(env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean),
    '/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/usr/local/lib', '/lib/x86_64-linux-gnu', '/lib64',
  ];
  if (!libDirs.some((d) => existsSync(`${d}/libvulkan.so.1`))) return 'no Vulkan loader (libvulkan.so.1)';
  // The loader's manifest search path on Linux (XDG config dirs, /etc, XDG data dirs).
  const home = env.HOME ?? '';
  const icdDirs = [
    env.XDG_CONFIG_HOME || (home && `${home}/.config`),
    ...(env.XDG_CONFIG_DIRS || '/etc/xdg').split(':'),
    '/etc',
    env.XDG_DATA_HOME || (home && `${home}/.local/share`),
    ...(env.XDG_DATA_DIRS || '/usr/local/share:/usr/share').split(':'),
  ].filter(Boolean).map((d) => `${d}/vulkan/icd.d`);
  const manifests: string[] = [];
  for (const d of icdDirs) {
    try {
      for (const f of readdirSync(d)) if (f.endsWith('.json')) manifests.push(f);
    } catch {
      // no such folder
    }
  }
  if (manifests.length === 0) return 'no Vulkan driver manifest (ICD) installed';
  if (manifests.every((f) => /^lvp_icd/.test(f))) return 'the only Vulkan driver is Mesa lavapipe, which Dawn rejects';
  return null;
}

/**
 * Worker threads for Mesa's software adapters (llvmpipe, lavapipe), read once when the driver loads: LP_NUM_THREADS
 * when set, else 4 per core here. llvmpipe cuts each dispatch's workgroups into one equal contiguous chunk per
 * worker thread, and the dispatch ends when the last chunk does: with one thread per core (Mesa's default) a
 * dispatch waits for the slower core's half whenever the other core is busy or stolen by the host; with smaller
 * chunks the less loaded core takes more of them (docs/BENCHMARKS.md: an AttRec training step 1.1-1.4x faster in
 * the median on 2 cores, and steadier). Real GPUs ignore it.
 */
export type AdapterStrings = { vendor?: string; architecture?: string; device?: string; description?: string };

/** Whether an adapter described by these strings is one of Mesa's CPU rasterisers (llvmpipe / lavapipe / softpipe). */
export function mesaSoftwareAdapter(info: AdapterStrings): boolean {
  const s = `${info.vendor ?? ''} ${info.architecture ?? ''} ${info.device ?? ''} ${info.description ?? ''}`.toLowerCase();
  return /llvmpipe|lavapipe|softpipe/.test(s);
}

async function softwareThreads(): Promise<number> {
  const os = await import('node:os');
  const cores = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  return Math.min(32, 4 * Math.max(1, cores));
}

async function defaultAttempts(): Promise<Attempt[]> {
  const skip = await vulkanProbeSkipReason();
  if (skip && flags.debug >= 1) log(`adapter attempt backend=default level=core: skipped (${skip})`);
  return [...(skip ? [] : [{ backend: 'default', level: 'core' } as Attempt]), { backend: 'opengles', level: 'compatibility' }];
}

async function acquireNode(forced: string): Promise<{ adapter: GPUAdapter; backend: string; level: FeatureLevel }> {
  const env = (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env;
  // Mesa's EGL needs a platform without a display server; must be set before the first requestAdapter().
  if (env) {
    env.EGL_PLATFORM ??= 'surfaceless';
    env.NODEVICE_SELECT ??= '1';
    env.LP_NUM_THREADS ??= String(await softwareThreads());
  }
  let mod: { create: (flags: string[]) => GPU; globals: Record<string, unknown> };
  try {
    mod = (await import('webgpu')) as unknown as typeof mod;
  } catch (e) {
    throw new Error(`No WebGPU implementation: the npm package 'webgpu' could not be loaded (${String(e)}).\n${INSTALL_HINT}`);
  }
  // GPUBufferUsage, GPUMapMode, ... as globals, as in a browser.
  for (const [k, v] of Object.entries(mod.globals)) {
    if (!(k in globalThis)) (globalThis as Record<string, unknown>)[k] = v;
  }
  const attempts: Attempt[] = forced
    ? forced === 'default'
      ? [{ backend: 'default', level: 'core' }]
      : [
          { backend: forced, level: 'core' },
          { backend: forced, level: 'compatibility' },
        ]
    : await defaultAttempts();
  const tried: string[] = [];
  for (const a of attempts) {
    const dawnFlags = [...flags.dawnFlags];
    if (a.backend !== 'default') dawnFlags.push(`backend=${a.backend}`);
    try {
      const gpu = mod.create(dawnFlags);
      dawnInstances.push(gpu);
      const opts: GPURequestAdapterOptions = { powerPreference: 'high-performance' };
      if (a.level === 'compatibility') (opts as { featureLevel?: string }).featureLevel = 'compatibility';
      const adapter = await gpu.requestAdapter(opts);
      if (flags.debug >= 1) log(`adapter attempt backend=${a.backend} level=${a.level}: ${adapter ? 'ok' : 'none'}`);
      if (adapter) return { adapter, backend: a.backend, level: a.level };
      tried.push(`${a.backend} (${a.level}): no adapter`);
    } catch (e) {
      tried.push(`${a.backend} (${a.level}): ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
    }
  }
  const forcedHint = forced
    ? `SEQREC_BACKEND=${forced} (or initGpu({ backend })) forced this backend; unset it for the default order.\n`
    : '';
  throw new Error(`No WebGPU adapter found. Tried:\n  ${tried.join('\n  ')}\n${forcedHint}${INSTALL_HINT}`);
}

/**
 * Acquire (or adopt) the device. Idempotent: a second call returns the current one unless a different device
 * is handed in.
 */
export async function initGpu(opts: InitOptions = {}): Promise<Gpu> {
  if (current && lostDevices.has(current.device)) await destroyGpu(); // a lost device is replaced, not reused
  if (current && (!opts.device || opts.device === current.device)) return current;
  if (current) await destroyGpu();
  if (opts.device) {
    current = { device: opts.device, adapter: opts.adapter ?? null, info: makeInfo(opts.device, opts.adapter ?? null, 'external', 'core') };
    ownsDevice = false;
    return finishInit(current);
  }
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  const isNode = typeof (globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node === 'string';
  let adapter: GPUAdapter;
  let backend: string;
  let level: FeatureLevel;
  if (!isNode && nav?.gpu) {
    const a = (await nav.gpu.requestAdapter({ powerPreference: 'high-performance' })) ??
      (await nav.gpu.requestAdapter({ featureLevel: 'compatibility' } as GPURequestAdapterOptions));
    if (!a) throw new Error('No WebGPU adapter: navigator.gpu.requestAdapter() returned null. Enable WebGPU in this browser.');
    adapter = a;
    backend = 'browser';
    level = a.features.has('core-features-and-limits' as GPUFeatureName) ? 'core' : 'compatibility';
  } else {
    ({ adapter, backend, level } = await acquireNode(opts.backend ?? flags.backend));
  }
  const device = await requestDevice(adapter);
  const info = makeInfo(device, adapter, backend, level);
  const lp = Number((globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env.LP_NUM_THREADS);
  if (isNode && mesaSoftwareAdapter(info) && Number.isInteger(lp) && lp > 0) info.softwareThreads = lp;
  current = { device, adapter, info };
  ownsDevice = true;
  return finishInit(current);
}

const lostDevices = new WeakSet<GPUDevice>();

function finishInit(g: Gpu): Gpu {
  g.device.lost.then((info) => {
    lostDevices.add(g.device);
    if (current?.device === g.device && info.reason !== 'destroyed') log(`device lost: ${info.message}`);
  });
  g.device.addEventListener('uncapturederror', (ev) => {
    const err = (ev as GPUUncapturedErrorEvent).error;
    log(`uncaptured WebGPU error: ${err.message}`);
  });
  if (flags.debug >= 1) {
    const i = g.info;
    log(`device: backend=${i.backend} level=${i.featureLevel} vendor=${i.vendor} arch=${i.architecture} ${i.description}`);
  }
  return g;
}

/** The current device; throws when initGpu() has not run. */
export function getGpu(): Gpu {
  if (!current) throw new Error('No GPU device: call `await initGpu()` first.');
  return current;
}

export function hasGpu(): boolean {
  return current !== null;
}

/** Free every cached pipeline and pooled buffer, and destroy the device if the engine created it. */
export async function destroyGpu(): Promise<void> {
  if (!current) return;
  const g = current;
  for (const fn of onDestroy) fn();
  current = null;
  if (ownsDevice) {
    if (!lostDevices.has(g.device)) await Promise.race([g.device.queue.onSubmittedWorkDone(), g.device.lost]);
    g.device.destroy();
  }
}
