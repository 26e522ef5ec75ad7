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
  /** Limit DEBUG output (every level) to kernels whose name contains one of these (comma-separated). */
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
  /**
   * Range-check lookup ids on the GPU (embedding, candidate lists): a bad id is reported at the next sync /
   * readback as an Error naming the op, the position and the value. CHECK_IDS=0 turns it off.
   */
  checkIds: getenv('CHECK_IDS', '1') !== '0',
  /** Debug: check every op's f32 output for NaN/Inf; the next sync / readback names the first op that made one. */
  checkFinite: getenv('CHECK_FINITE') === '1',
  /**
   * Loop budget of one shader invocation (LOOP_BUDGET=n, or 'inf'); null: from the adapter (65,535 on Mesa
   * llvmpipe / lavapipe / softpipe, unbounded elsewhere). Tests set a small one to exercise the chunked paths.
   */
  loopBudget: readLoopBudget(),
};

function readLoopBudget(): number | null {
  const v = getenv('LOOP_BUDGET');
  if (v === '') return null;
  if (/^(inf|infinity)$/i.test(v)) return Infinity;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`environment variable LOOP_BUDGET='${v}' is not a positive integer (or 'inf')`);
  return n;
}

/** Whether to print a DEBUG line of `level` about kernel `name` (KERNEL_FILTER, when set, must match the name). */
export function debugKernel(name: string, level: number): boolean {
  if (flags.debug < level) return false;
  return flags.kernelFilter.length === 0 || flags.kernelFilter.some((f) => name.includes(f));
}

/** Whether to print a DEBUG line about several kernels (a flush): with KERNEL_FILTER, one of them must match. */
export function debugKernels(names: Iterable<string>, level: number): boolean {
  if (flags.debug < level) return false;
  if (flags.kernelFilter.length === 0) return true;
  for (const n of names) if (debugKernel(n, level)) return true;
  return false;
}

export function log(...args: unknown[]): void {
  console.error('[seqrec]', ...args);
}

/**
 * Absolute path of a file or folder shipped with the package (e.g. `packagePath('data/sample')`), the same from
 * the TypeScript sources (<root>/engine/env.ts) and from the compiled package (<root>/dist/engine/env.js), so a
 * default like the bundled sample data does not depend on the working directory. Node only (null elsewhere).
 */
export function packagePath(rel = ''): string | null {
  const proc = (globalThis as { process?: { platform?: string; getBuiltinModule?: (id: string) => unknown } }).process;
  let url: URL;
  try {
    url = new URL('..', import.meta.url); // <root>/ or <root>/dist/
  } catch {
    return null;
  }
  if (url.protocol !== 'file:' || !proc) return null;
  if (url.pathname.endsWith('/dist/')) url = new URL('..', url);
  const target = new URL(rel.replace(/^\/+/, ''), url);
  const nodeUrl = proc.getBuiltinModule?.('node:url') as { fileURLToPath(u: URL): string } | undefined;
  if (nodeUrl) return nodeUrl.fileURLToPath(target);
  const p = decodeURIComponent(target.pathname);
  return proc.platform === 'win32' ? p.replace(/^\/([A-Za-z]:)/, '$1').replace(/\//g, '\\') : p;
}
