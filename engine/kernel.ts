// defineKernel: the WGSL is the spec. A kernel is a complete WGSL module with explicit @group(0)/@binding(n);
// reflection derives the bind-group layout, the uniform layout and the workgroup size. Nothing happens until
// the first compile() or run(); then the pipeline is compiled once per (name, overrides) and cached under a
// readable key: the name, plus `{K=64,WG=128}` when override constants are given.
// WGSL errors name the kernel, the line and the line's text: a parse error (wgsl_reflect) throws at first use,
// synchronously; a compile error (Dawn's getCompilationInfo, async) rejects `await kernel.compile()`, is thrown
// at the next sync()/readback after a first run() (ahead of the GPU errors it causes), and by every run() after.
import { debugKernel, flags, log } from './env.js';
import { reflectKernel, resolveWorkgroupSize, type KernelLayout, type Scalar } from './reflect.js';
import { rt } from './runtime.js';
import { markWritten } from './versions.js';
import { mesaSoftwareAdapter, type AdapterStrings } from './gpu.js';

/** Anything that can be bound to a storage binding: a Tensor, or a raw buffer region. */
export interface Bindable {
  readonly buffer: GPUBuffer;
  readonly byteOffset: number;
  readonly byteLength: number;
  readonly dtype: Scalar;
  readonly disposed?: boolean;
}

export type ParamValue = number | boolean | readonly number[];
export type Grid = readonly number[];

export interface KernelSpec {
  /** One name used everywhere: cache key, GPU label, DEBUG line, bench row, test title. */
  name: string;
  wgsl: string;
  entryPoint?: string;
  /** Workgroup counts [x, y?, z?] from the params and the resolved workgroup size. */
  grid: (params: Record<string, number>, workgroupSize: readonly [number, number, number]) => Grid;
  /**
   * The kernel computes a linear workgroup index as `wid.x + wid.y * nwg.x` (nwg = num_workgroups), so a 1-D
   * grid larger than maxComputeWorkgroupsPerDimension may be folded into 2-D. Without this flag such a grid throws.
   */
  foldable?: boolean;
  /** Minimum element counts per storage binding (checked before dispatch). */
  minSizes?: (params: Record<string, number>) => Record<string, number>;
  /** Default override constants (merged over the WGSL defaults). */
  overrides?: Record<string, number>;
  /**
   * Worst-case loop cost of ONE invocation, in the units of llvmpipe's loop budget (see loopCost below): a
   * number for loops bounded by constants, or a function of the params and the override constants (WGSL
   * defaults merged in). Mesa llvmpipe gives an invocation 65,535 loop iterations shared by ALL its loops
   * (nested and sequential) and silently exits them past that; run() refuses a dispatch whose declared cost is
   * over loopBudget(), naming the kernel. Every kernel with a loop declares this; launchers chunk to stay under.
   */
  loopTrips?: number | ((params: Record<string, number>, overrides: Record<string, number>) => number);
}

interface Compiled {
  pipeline: GPUComputePipeline;
  bgl: GPUBindGroupLayout;
  workgroupSize: [number, number, number];
  /** The source compiled (two kernels may not share a name with different WGSL: the name is the cache key). */
  wgsl: string;
  /** The compile result: the WgslCompileError, or null. Never rejects. */
  status: Promise<WgslCompileError | null>;
  /** Set once `status` resolved to an error: every later run() throws it at once. */
  error: WgslCompileError | null;
  /** `status` was handed to the queue (its error is thrown at the next sync/readback). */
  tracked: boolean;
}

/** One error message of the WGSL compiler: 1-based line and column, the message, the line's text. */
export interface WgslMessage {
  line: number;
  column: number;
  message: string;
  text: string;
}

/**
 * A kernel's WGSL did not compile. The message names the kernel and, per error, the line, the column, the
 * compiler's message and the line's text:
 *   `my_kernel: WGSL compile error\n  line 3:16: unresolved call target 'foo'\n    out[i] = foo(1.0);`
 */
export class WgslCompileError extends Error {
  constructor(
    readonly kernel: string,
    readonly messages: readonly WgslMessage[],
    detail = '',
  ) {
    const lines = messages.map((m) => `  line ${m.line}:${m.column}: ${m.message}\n    ${m.text.trim()}`);
    super(`${kernel}: WGSL compile error\n${lines.join('\n') || '  ' + detail}`);
    this.name = 'WgslCompileError';
  }
}

/** The pipeline cache key: the kernel name, plus `{K=64,WG=128}` (sorted) when override constants are given. */
export function pipelineKey(name: string, overrides: Record<string, number>): string {
  const e = Object.entries(overrides).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return e.length ? `${name}{${e.map(([k, v]) => `${k}=${v}`).join(',')}}` : name;
}

export interface RunOptions {
  overrides?: Record<string, number>;
  /** This dispatch's worst-case loop cost, when the launcher knows it better than the spec (replaces loopTrips). */
  loopTrips?: number;
}

// ------------------------------------------------------------------ the loop budget
/**
 * Loop cost of a loop that runs n iterations, each costing `body` (the cost of the loops inside it): llvmpipe
 * decrements one per-invocation counter at every loop-header evaluation (n iterations cost n + 1; measured: a
 * nested pair costs one more), so n * (body + 1) + 2 is a safe upper bound. Sequential loops add up.
 */
export function loopCost(n: number, body = 0): number {
  return Math.max(0, n) * (body + 1) + 2;
}

/** The largest n with loopCost(n, body) + fixed <= budget (Infinity for an unbounded budget; may be 0). */
export function maxLoopIterations(budget: number, body = 0, fixed = 0): number {
  if (!Number.isFinite(budget)) return Infinity;
  return Math.max(0, Math.floor((budget - fixed - 2) / (body + 1)));
}

/**
 * Split [0, n) into ranges of at most `per` (Infinity: one range; [[0, 0]] when n = 0), one dispatch each: the
 * chunked kernels carry their running state between dispatches in their outputs, in the same order as one
 * dispatch would (bit-identical results).
 */
export function chunkRanges(n: number, per: number): Array<[number, number]> {
  const step = Number.isFinite(per) ? Math.max(1, Math.floor(per)) : Math.max(n, 1);
  const out: Array<[number, number]> = [];
  for (let a = 0; a < n; a += step) out.push([a, Math.min(n, a + step)]);
  if (!out.length) out.push([0, 0]);
  return out;
}

/** Mesa's software rasterisers (llvmpipe; lavapipe and softpipe share gallivm's LP_MAX_TGSI_LOOP_ITERATIONS). */
export const MESA_LOOP_BUDGET = 65535;

/** The loop budget of an adapter described by these strings: 65,535 on Mesa llvmpipe/lavapipe/softpipe, else Infinity. */
export function adapterLoopBudget(info: AdapterStrings): number {
  return mesaSoftwareAdapter(info) ? MESA_LOOP_BUDGET : Infinity;
}

let budgetCache: { device: unknown; budget: number } | null = null;
/**
 * Loop iterations one invocation may run on the current device: `flags.loopBudget` (env LOOP_BUDGET) when set,
 * else adapterLoopBudget(adapter info). Launchers size their chunks from it; Kernel.run() enforces it.
 */
export function loopBudget(): number {
  if (flags.loopBudget !== null) return flags.loopBudget;
  const g = rt().gpu;
  if (budgetCache?.device !== g.device) budgetCache = { device: g.device, budget: adapterLoopBudget(g.info) };
  return budgetCache.budget;
}

/** Every kernel defined so far (tests check that each looping one declares its loop cost). */
export const definedKernels: Kernel[] = [];

/** Whether a WGSL module has a loop statement. */
export function wgslHasLoop(wgsl: string): boolean {
  const code = wgsl.replace(/\/\/.*$/gm, '');
  return /\b(for|while)\s*\(|\bloop\s*\{/.test(code);
}

export class Kernel {
  private layoutCache: KernelLayout | null = null;
  constructor(readonly spec: KernelSpec) {}

  get name(): string {
    return this.spec.name;
  }

  /**
   * The reflected layout (parsed once, at first use). A WGSL parse error throws here, naming the kernel and the
   * line (with the line before it: a missing ';' is reported on the next line).
   */
  layout(): KernelLayout {
    if (!this.layoutCache) {
      try {
        this.layoutCache = reflectKernel(this.spec.name, this.spec.wgsl, this.spec.entryPoint ?? 'main');
      } catch (e) {
        throw withSourceLines(e, this.spec.wgsl);
      }
    }
    return this.layoutCache;
  }

  /**
   * The declared worst-case loop cost of one invocation for these params (undefined when the kernel declares
   * none). `opts.loopTrips` replaces the spec's declaration.
   */
  loopTrips(params: Record<string, ParamValue>, opts: RunOptions = {}): number | undefined {
    const t = this.spec.loopTrips;
    if (opts.loopTrips !== undefined || typeof t !== 'function') return opts.loopTrips ?? (t as number | undefined);
    const numeric: Record<string, number> = {};
    for (const [k, v] of Object.entries(params)) if (typeof v === 'number' || typeof v === 'boolean') numeric[k] = Number(v);
    return this.tripsOf(numeric, this.overrideValues(opts.overrides), opts);
  }

  private tripsOf(numeric: Record<string, number>, overrides: Record<string, number>, opts: RunOptions): number | undefined {
    const t = this.spec.loopTrips;
    if (opts.loopTrips !== undefined || typeof t !== 'function') return opts.loopTrips ?? (t as number | undefined);
    const ov: Record<string, number> = {};
    for (const [k, v] of Object.entries(this.layout().overrides)) if (Number.isFinite(v)) ov[k] = v;
    return t(numeric, { ...ov, ...overrides });
  }

  /** Whether a dispatch with these params stays within the device's loop budget. */
  fitsLoopBudget(params: Record<string, ParamValue>, opts: RunOptions = {}): boolean {
    const t = this.loopTrips(params, opts);
    return t === undefined || t <= loopBudget();
  }

  private overrideValues(extra?: Record<string, number>): Record<string, number> {
    const layout = this.layout();
    const o: Record<string, number> = { ...(this.spec.overrides ?? {}), ...(extra ?? {}) };
    for (const k of Object.keys(o)) {
      if (!(k in layout.overrides)) throw new Error(`${this.name}: unknown override '${k}' (declared: ${Object.keys(layout.overrides).join(', ') || 'none'})`);
    }
    return o;
  }

  private compiled(overrides: Record<string, number>): Compiled {
    const r = rt();
    const key = pipelineKey(this.name, overrides);
    let c = r.pipelines.get(key) as Compiled | undefined;
    if (c) {
      if (c.wgsl !== this.spec.wgsl) {
        throw new Error(`${this.name}: another kernel with this name has different WGSL; kernel names must be unique (the name is the pipeline cache key)`);
      }
      return c;
    }
    const layout = this.layout();
    const device = r.device;
    // Dawn would only report this as a validation error at the next sync, without the kernel's name; WebGPU
    // guarantees 8 (Chromium's adapters give 10, llvmpipe 16), so a kernel over 8 works here and fails elsewhere.
    const maxStorage = device.limits.maxStorageBuffersPerShaderStage;
    const storage = layout.storage.filter((s) => s.kind !== 'uniform'); // uniform arrays count against the uniform limit (12 guaranteed)
    if (storage.length > maxStorage) {
      throw new Error(
        `${this.name}: binds ${storage.length} storage buffers (${storage.map((s) => s.name).join(', ')}), over this device's ` +
          `maxStorageBuffersPerShaderStage of ${maxStorage} (WebGPU guarantees 8): the kernel must bind fewer (pack arrays into one buffer)`,
      );
    }
    const entries: GPUBindGroupLayoutEntry[] = [];
    if (layout.uniform) entries.push({ binding: layout.uniform.binding, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform' } });
    for (const s of layout.storage) {
      const type = s.kind === 'read' ? 'read-only-storage' : s.kind === 'uniform' ? 'uniform' : 'storage';
      entries.push({ binding: s.binding, visibility: GPUShaderStage.COMPUTE, buffer: { type } });
    }
    const workgroupSize = resolveWorkgroupSize(this.name, layout, overrides);
    device.pushErrorScope('validation');
    const module = device.createShaderModule({ code: this.spec.wgsl, label: this.name });
    const bgl = device.createBindGroupLayout({ entries, label: this.name });
    const pipeline = device.createComputePipeline({
      label: key,
      layout: device.createPipelineLayout({ bindGroupLayouts: [bgl], label: this.name }),
      compute: { module, entryPoint: layout.entryPoint, constants: overrides },
    });
    const scope = device.popErrorScope();
    const compiled: Compiled = { pipeline, bgl, workgroupSize, wgsl: this.spec.wgsl, status: Promise.resolve(null), error: null, tracked: false };
    compiled.status = this.checkCompile(module, scope).then((err) => (compiled.error = err));
    if (debugKernel(this.name, 4)) log(`new pipeline ${key}\n${numberLines(this.spec.wgsl)}`);
    if (flags.dumpDir) void dumpWgsl(this.name, this.spec.wgsl);
    r.pipelines.set(key, compiled);
    return compiled;
  }

  /** The compile error of a pipeline (kernel name, line, column, message, the line's text), or null. */
  private async checkCompile(module: GPUShaderModule, scope: Promise<GPUError | null>): Promise<WgslCompileError | null> {
    let err: GPUError | null;
    try {
      err = await scope;
    } catch (e) {
      return new WgslCompileError(this.name, [], e instanceof Error ? e.message : String(e));
    }
    if (!err) return null;
    const info = await module.getCompilationInfo().catch(() => ({ messages: [] as GPUCompilationMessage[] }));
    const lines = this.spec.wgsl.split('\n');
    const msgs = info.messages
      .filter((m) => m.type === 'error')
      .map((m) => ({ line: m.lineNum, column: m.linePos, message: m.message, text: lines[m.lineNum - 1] ?? '' }));
    return new WgslCompileError(this.name, msgs, err.message);
  }

  /**
   * Compile now (layout, shader module, pipeline) and wait for the compiler: a WGSL error rejects with a
   * WgslCompileError naming the kernel and the line. Cheap when already compiled. Tests and tools call it for
   * every new kernel; run() compiles on its own, but can only report a compile error at the next sync/readback.
   */
  async compile(opts: RunOptions = {}): Promise<void> {
    const c = this.compiled(this.overrideValues(opts.overrides));
    const err = await c.status;
    if (err) throw err;
  }

  /**
   * Record one dispatch. `bindings` keys are the WGSL binding names; `params` keys are the uniform struct's
   * member names. Both are checked: missing, extra, wrong dtype or too small raise an error naming the kernel.
   */
  run(bindings: Record<string, Bindable>, params: Record<string, ParamValue> = {}, opts: RunOptions = {}): void {
    const r = rt();
    const layout = this.layout();
    const overrides = this.overrideValues(opts.overrides);
    const c = this.compiled(overrides);
    if (c.error) throw c.error;
    if (!c.tracked) {
      // The compiler answers asynchronously: its error is thrown at the next sync/readback, before the GPU
      // validation errors an invalid pipeline causes (queue.ts ranks WgslCompileError first).
      c.tracked = true;
      r.queue.pushPending(c.status.then((err) => {
        if (err) throw err;
      }));
    }
    const numeric: Record<string, number> = {};
    for (const [k, v] of Object.entries(params)) if (typeof v === 'number' || typeof v === 'boolean') numeric[k] = Number(v);
    const entries: GPUBindGroupEntry[] = [];
    // Storage bindings
    const names = new Set(layout.storage.map((s) => s.name));
    for (const k of Object.keys(bindings)) {
      if (!names.has(k)) throw new Error(`${this.name}: unknown binding '${k}' (bindings: ${[...names].join(', ')})`);
    }
    const mins = this.spec.minSizes ? this.spec.minSizes(numeric) : {};
    const maxBinding = r.device.limits.maxStorageBufferBindingSize;
    for (const s of layout.storage) {
      const t = bindings[s.name];
      if (!t) throw new Error(`${this.name}: missing binding '${s.name}'`);
      if (t.disposed) throw new Error(`${this.name}: binding '${s.name}' is a disposed tensor`);
      if (t.dtype !== s.scalar) throw new Error(`${this.name}: binding '${s.name}' expects ${s.scalar} elements, got a ${t.dtype} tensor`);
      const elems = t.byteLength / 4 / s.lanes;
      if (!Number.isInteger(elems)) throw new Error(`${this.name}: binding '${s.name}' is ${t.byteLength} bytes, not a whole number of ${s.lanes}x${s.scalar} elements`);
      const need = Math.max(s.count, mins[s.name] ?? 0);
      if (elems < need) throw new Error(`${this.name}: binding '${s.name}' has ${elems} elements, needs at least ${need}`);
      if (t.byteLength > maxBinding) {
        throw new Error(`${this.name}: binding '${s.name}' is ${t.byteLength} bytes, over this device's maxStorageBufferBindingSize (${maxBinding}); split the work into smaller tensors`);
      }
      if (t.byteLength === 0) throw new Error(`${this.name}: binding '${s.name}' is empty`);
      if (s.kind === 'uniform') {
        const lim = r.device.limits;
        if (t.byteLength > lim.maxUniformBufferBindingSize) throw new Error(`${this.name}: uniform binding '${s.name}' is ${t.byteLength} bytes, over this device's maxUniformBufferBindingSize (${lim.maxUniformBufferBindingSize})`);
        if (t.byteOffset % lim.minUniformBufferOffsetAlignment !== 0) throw new Error(`${this.name}: uniform binding '${s.name}' starts at byte ${t.byteOffset}, not a multiple of minUniformBufferOffsetAlignment (${lim.minUniformBufferOffsetAlignment})`);
        if (!(t.buffer.usage & GPUBufferUsage.UNIFORM)) throw new Error(`${this.name}: uniform binding '${s.name}' is a buffer without UNIFORM usage`);
      }
      entries.push({ binding: s.binding, resource: { buffer: t.buffer, offset: t.byteOffset, size: Math.ceil(t.byteLength / 4) * 4 } });
    }
    // Uniforms
    if (layout.uniform) {
      const u = layout.uniform;
      const want = new Set(u.members.map((m) => m.name));
      for (const k of Object.keys(params)) if (!want.has(k)) throw new Error(`${this.name}: unknown param '${k}' (params: ${[...want].join(', ')})`);
      const bytes = new Uint8Array(u.size);
      const dv = new DataView(bytes.buffer);
      for (const m of u.members) {
        const v = params[m.name];
        if (v === undefined) throw new Error(`${this.name}: missing param '${m.name}'`);
        const vals = typeof v === 'object' ? v : [Number(v)];
        if (vals.length > m.lanes || (typeof v !== 'object' && m.lanes !== 1 && m.lanes > 4)) {
          throw new Error(`${this.name}: param '${m.name}' has ${vals.length} values, the WGSL member holds ${m.lanes}`);
        }
        if (typeof v === 'object' && m.lanes <= 4 && vals.length !== m.lanes) {
          throw new Error(`${this.name}: param '${m.name}' needs ${m.lanes} values, got ${vals.length}`);
        }
        vals.forEach((x, i) => {
          const off = m.offset + 4 * i;
          if (m.scalar === 'f32') dv.setFloat32(off, x, true);
          else if (m.scalar === 'i32') dv.setInt32(off, x, true);
          else {
            if (x < 0 || !Number.isInteger(x)) throw new Error(`${this.name}: param '${m.name}' = ${x} is not a u32`);
            dv.setUint32(off, x, true);
          }
        });
      }
      entries.push({ binding: u.binding, resource: r.queue.uniform(bytes) });
      if (debugKernel(this.name, 3)) log(`  ${this.name} params ${JSON.stringify(params)}`);
    } else if (Object.keys(params).length) {
      throw new Error(`${this.name}: params given but the kernel has no uniform binding`);
    }
    if (debugKernel(this.name, 3)) log(`  ${this.name} bindings ${layout.storage.map((s) => `${s.name}:${bindings[s.name]!.byteLength}B`).join(' ')}`);
    const grid = this.fold(this.spec.grid(numeric, c.workgroupSize), r.device.limits.maxComputeWorkgroupsPerDimension);
    if (grid[0] === 0 || grid[1] === 0 || grid[2] === 0) return; // nothing to do
    const trips = this.tripsOf(numeric, overrides, opts);
    if (trips !== undefined) {
      const budget = loopBudget();
      if (!(trips <= budget)) {
        throw new Error(
          `${this.name}: one invocation would run up to ${trips} loop iterations, over this adapter's loop budget of ${budget} ` +
            '(Mesa llvmpipe silently ends every loop of an invocation past 65,535 iterations in all; LOOP_BUDGET overrides): the launcher must chunk this work',
        );
      }
    }
    r.queue.openScope(); // a bind-group validation error belongs to this batch
    const bindGroup = r.device.createBindGroup({ layout: c.bgl, entries, label: this.name });
    r.queue.dispatch(this.name, c.pipeline, bindGroup, grid);
    for (const s of layout.storage) if (s.kind === 'read_write') markWritten(bindings[s.name]!.buffer);
  }

  private fold(g: Grid, max: number): [number, number, number] {
    const [x = 1, y = 1, z = 1] = g.map((v) => Math.ceil(v));
    if (x <= max && y <= max && z <= max) return [x, y, z];
    if (this.spec.foldable && y === 1 && z === 1) {
      const yy = Math.ceil(x / max);
      if (yy <= max) return [Math.ceil(x / yy), yy, 1];
    }
    throw new Error(`${this.name}: grid [${x}, ${y}, ${z}] exceeds maxComputeWorkgroupsPerDimension (${max}) and the kernel is not foldable`);
  }
}

export function defineKernel(spec: KernelSpec): Kernel {
  const k = new Kernel(spec);
  definedKernels.push(k);
  return k;
}

export const ceilDiv = (a: number, b: number): number => Math.ceil(a / b);

/** WGSL with right-aligned line numbers (the numbers compile errors use). */
function numberLines(wgsl: string): string {
  const lines = wgsl.split('\n');
  const w = String(lines.length).length;
  return lines.map((l, i) => `${String(i + 1).padStart(w)} | ${l}`).join('\n');
}

/** A wgsl_reflect parse error ("... Line: 4") with the source lines it points at appended. */
function withSourceLines(e: unknown, wgsl: string): Error {
  const err = e instanceof Error ? e : new Error(String(e));
  const m = /Line: (\d+)/.exec(err.message);
  if (!m) return err;
  const n = Number(m[1]);
  const lines = wgsl.split('\n');
  const show = [n - 1, n].filter((i) => i >= 1 && i <= lines.length).map((i) => `  line ${i}: ${lines[i - 1]!.trim()}`);
  if (show.length) err.message += `\n${show.join('\n')}`;
  return err;
}

async function dumpWgsl(name: string, wgsl: string): Promise<void> {
  const fs = await import('node:fs/promises');
  const { createHash } = await import('node:crypto');
  await fs.mkdir(flags.dumpDir, { recursive: true });
  const h = createHash('sha1').update(wgsl).digest('hex').slice(0, 8);
  await fs.writeFile(`${flags.dumpDir}/${name}.${h}.wgsl`, wgsl);
}
