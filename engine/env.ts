// Environment switches, read once (tinygrad helpers.py style). Every variable is documented in the README.
// Works in browsers too: `process` may be absent there, then everything takes its default.

function readEnv(name: string): string | undefined {
  const p = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process;
  return p?.env?.[name];
}

export function getenv(name: string, fallback = ''): string {
  const v = readEnv(name);
  return v === undefined || v === '' ? fallback : v;
}

export function getenvInt(name: string, fallback: number): number {
  const v = readEnv(name);
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`environment variable ${name}='${v}' is not a number`);
  return Math.trunc(n);
}

/** Mutable flags: tests and tools may change them at run time (e.g. `flags.sync = true`). */
export const flags = {
  /** 0 quiet; 1 adapter + flushes; 2 one line per dispatch; 3 + bindings and uniforms; 4 + WGSL of new pipelines. */
  debug: getenvInt('DEBUG', 0),
  /** Limit DEBUG output to kernels whose name contains one of these (comma-separated). */
  kernelFilter: getenv('KERNEL_FILTER').split(',').map((s) => s.trim()).filter(Boolean),
  /** Write each new pipeline's WGSL to this folder (Node only). */
  dumpDir: getenv('DUMP_DIR'),
  /** Flush and wait after every dispatch, with error scopes, so a failing kernel is named. */
  sync: getenv('SYNC') === '1',
  /** POOL=0 disables buffer reuse (use-after-release bugs then show up as errors or garbage). */
  pool: getenv('POOL', '1') !== '0',
  /** Dispatches per submit before an automatic flush. */
  flushEvery: Math.max(1, getenvInt('FLUSH_EVERY', 256)),
  /** Fill every new tensor's buffer with 0xFFFFFFFF (NaN as f32) so a kernel that skips an output shows it. */
  poison: getenv('POISON') === '1',
  /** Extra Dawn toggles passed to create(), comma-separated (e.g. backend=vulkan). */
  dawnFlags: getenv('DAWN_FLAGS').split(',').map((s) => s.trim()).filter(Boolean),
  /** Force a backend: 'default' | 'opengles' | 'vulkan' | ... (SEQREC_BACKEND). */
  backend: getenv('SEQREC_BACKEND'),
};

export function debugKernel(name: string, level: number): boolean {
  if (flags.debug < level) return false;
  return flags.kernelFilter.length === 0 || flags.kernelFilter.some((f) => name.includes(f));
}

export function log(...args: unknown[]): void {
  console.error('[seqrec]', ...args);
}
