// models/optim.ts — optimizers: Adam (PyTorch), Adagrad (TF's AdagradOptimizer), SGD (PyTorch, optional momentum).
//
// What it computes, per parameter p with gradient g (parameters whose .grad is null are SKIPPED entirely: no
// update, no state change, their step count does not advance — PyTorch's rule, which S3-Rec relies on for the
// pretraining heads during fine-tuning):
//   Adam     g' = g + wd*p; m = b1*m + (1-b1)*g'; v = b2*v + (1-b2)*g'^2;
//            p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)          (torch.optim.Adam, amsgrad off)
//   Adagrad  g' = g + wd*p; acc += g'^2; p -= lr * g' / (sqrt(acc) + eps)            (TF: acc starts at
//            initialAccumulatorValue, eps 0; AttRec uses lr 0.05, initial accumulator 0.05)
//   SGD      d = g + wd*p; with momentum: buf = d on the first step, else buf = mu*buf + (1-dampening)*d;
//            d = nesterov ? d + mu*buf : buf; p -= lr*d                                (torch.optim.SGD)
// Step-dependent scalars (lr / (1-b1^t), sqrt(1-b2^t)) are computed on the host in float64 from the host-side step
// count, as PyTorch does, and enter the kernel as uniforms with lr and the other hyper-parameters: a step never
// reads anything back, and changing lr never recompiles.
//
// Parallel strategy: one thread updates one vec4 of a parameter (a scalar kernel only when a buffer has no 16-byte
// slack: every pool buffer has it, so the tail of an n % 4 != 0 parameter is updated in the buffer's padding, which
// nothing reads). Each parameter's update is one fused pass: read p, g, state; write p, state. The optimizer state
// of all parameters is packed into one buffer per state slot (the "arena", 4-float aligned offsets), so a launch
// binds the arenas plus K (param, grad) pairs (multi-tensor apply, as PyTorch's foreach): workgroup w finds its
// parameter from the per-slot workgroup ranges in the uniform.
// Memory traffic per element: Adam reads 4 floats and writes 3; Adagrad 3 / 2; SGD 2 (+1 with momentum) / 1 (+1).
// Variants (bench/optim.bench.ts; llvmpipe, shared 2-core machine under load, medians of interleaved runs; S3-Rec
// Adam = 45 tensors / 935,360 floats, AttRec Adagrad = 5 tensors / 810,300 floats):
//   default      a launch of its own for each parameter of >= packBelow (32768) floats, up to slotsPerLaunch (7, the
//                most the 16 storage buffers allow Adam) smaller ones per launch: 9 launches for S3-Rec, 5 for AttRec.
//                adam 6.8 ms, adagrad 3.6-3.9 ms
//   k1           one launch per parameter (slotsPerLaunch 1): adam 7.7-8.5 ms (45 launches), adagrad 3.7 ms
//   k7all        7 per launch whatever the size: adam 8.9-9.2 ms. llvmpipe cannot tell that the per-slot switch is
//                uniform per workgroup and runs every case masked, so each element of a packed launch pays K loads;
//                hence large parameters run alone.
//   scalar       one float per thread instead of one vec4: adam 11.4-12.0 ms, adagrad 6.0 ms.
//   composed     Adam from unfused elementwise ops (~16 dispatches per parameter): 62 ms.
// `npm run bench -- adam. adagrad.` at load 10 (medians 3x noisier), min ms: step 6.5, k1 6.8, k7all 7.5, scalar
// 10.8, composed 67; adagrad step 2.2, k1 2.0, scalar 3.8.
import { ceilDiv, defineKernel, fillInPlace, loopCost, rt, Tensor, untracked, type Bindable, type Kernel } from '../engine/index.js';
import { StateDictError, type OptimizerStateDict, type TensorData } from '../engine/safetensors.js';

/** Parameters as a list, named pairs, a Map, or anything with namedParameters() (a Module). */
export type ParamSource =
  | readonly Tensor[]
  | ReadonlyArray<readonly [string, Tensor]>
  | ReadonlyMap<string, Tensor>
  | { namedParameters(): Array<[string, Tensor]> };

export interface OptimizerOptions {
  /** Small parameters per launch (capped by the device's storage-buffer limit). 1 = one launch per parameter. */
  slotsPerLaunch?: number;
  /** Parameters with at least this many elements get a launch of their own (default DEFAULT_PACK_BELOW). */
  packBelow?: number;
  /** false: the scalar kernel (one float per thread) even where vec4 is possible. Default true. */
  vec4?: boolean;
  /** Largest state arena in floats (default: what one storage binding can hold). For tests. */
  arenaFloats?: number;
}

export const DEFAULT_SLOTS_PER_LAUNCH = 7;
export const DEFAULT_PACK_BELOW = 32768;
const WG = 256;
const UNUSED = 0xffffffff;

/** How one optimizer family updates an element: the WGSL pieces of its kernel. */
interface Rule {
  /** Kernel family name: adam | adagrad | sgd | sgd_momentum. */
  family: string;
  /** State slot names (the names in stateDict: `<param>.<slot>`). */
  state: readonly string[];
  /** Initial value of each state slot. */
  init: readonly number[];
  /** Uniform members for the hyper-parameters, e.g. `lr: f32, eps: f32,`. */
  members: string;
  /**
   * WGSL that updates `x` (the parameter element: an f32 or a vec4<f32>, per kernel variant) from `g` (its
   * gradient), the state arrays s0.. at index j, `c` (this parameter's vec4<f32> of per-step coefficients) and the
   * uniform `u`. Written so that it type-checks for both widths (scalar hyper-parameters broadcast).
   */
  body: string;
}

interface Entry {
  name: string;
  param: Tensor;
  arena: number;
  /** Offset of this parameter's state in its arena (floats). */
  offset: number;
  step: number;
}

const kernels = new Map<string, Kernel>();

function updateKernel(rule: Rule, K: number, vec4: boolean): Kernel {
  const name = `${rule.family}_k${K}${vec4 ? '_vec4' : ''}`;
  let k = kernels.get(name);
  if (k) return k;
  const S = rule.state.length;
  const T = vec4 ? 'vec4<f32>' : 'f32';
  const unit = vec4 ? 'vec4s' : 'floats';
  const decl: string[] = [];
  rule.state.forEach((s, i) => decl.push(`@group(0) @binding(${1 + i}) var<storage, read_write> s${i}: array<${T}>; // [arena ${unit}] ${s}, packed`));
  for (let q = 0; q < K; q++) {
    decl.push(`@group(0) @binding(${1 + S + 2 * q}) var<storage, read_write> p${q}: array<${T}>; // [n_${q}] parameter ${q}`);
    decl.push(`@group(0) @binding(${2 + S + 2 * q}) var<storage, read> g${q}: array<${T}>;       // [n_${q}] its gradient`);
  }
  const cases = (f: (q: number) => string): string =>
    Array.from({ length: K }, (_, q) => `    case ${q}u: { ${f(q)} }`).join('\n') + '\n    default: {}';
  const wgsl = /* wgsl */ `
// ${name}: one launch updates up to ${K} parameters, one ${T} per thread. slot[q] = (first workgroup, n in ${unit},
// state offset in ${unit}, -) of parameter q (unused slots start at 0xffffffff); coef[q] = its per-step
// coefficients. Thread i of the parameter's range updates element i; its state sits at s*[slot.z + i].
struct Params { ${rule.members} total_wg: u32, slot: array<vec4<u32>, ${K}>, coef: array<vec4<f32>, ${K}> }
@group(0) @binding(0) var<uniform> u: Params;
${decl.join('\n')}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let w = wid.x + wid.y * nwg.x;
  var q = 0u;
  for (var k = 1u; k < ${K}u; k = k + 1u) { if (w >= u.slot[k].x) { q = k; } }
  let sl = u.slot[q];
  let i = (w - sl.x) * ${WG}u + lid.x;
  if (w >= u.total_wg || i >= sl.y) { return; }
  let j = sl.z + i;
  let c = u.coef[q];
  var g = ${T}();
  var x = ${T}();
  switch q {
${cases((q) => `g = g${q}[i]; x = p${q}[i];`)}
  }
${rule.body
  .trim()
  .split('\n')
  .map((l) => '  ' + l.trim())
  .join('\n')}
  switch q {
${cases((q) => `p${q}[i] = x;`)}
  }
}`;
  // One loop: the slot search over the K parameters of the launch (a constant bound).
  k = defineKernel({ name, wgsl, foldable: true, grid: ({ total_wg }) => [total_wg!], loopTrips: loopCost(K - 1) });
  kernels.set(name, k);
  return k;
}

const ceil4 = (n: number): number => Math.ceil(n / 4) * 4;

/** The tensor's buffer rounded up to whole vec4s, if the buffer has that much (pool buffers always do). */
function asVec4(t: Tensor): Bindable | null {
  const bytes = ceil4(t.size) * 4;
  if (t.byteOffset !== 0 || t.buffer.size < bytes) return null;
  return { buffer: t.buffer, byteOffset: 0, byteLength: bytes, dtype: 'f32', disposed: t.disposed };
}

function namedList(src: ParamSource): Array<[string, Tensor]> {
  if (src instanceof Map) return [...(src as ReadonlyMap<string, Tensor>).entries()];
  if (!Array.isArray(src)) return (src as { namedParameters(): Array<[string, Tensor]> }).namedParameters();
  return (src as ReadonlyArray<Tensor | readonly [string, Tensor]>).map((x, i) => (x instanceof Tensor ? [String(i), x] : [x[0], x[1]]));
}

/** The shared machinery: packed state arenas, launch grouping, skipping, state dicts. */
export abstract class Optimizer {
  /** Learning rate; read at every step (a schedule may change it freely). */
  lr: number;
  protected readonly entries: Entry[];
  private readonly arenas: Tensor[][] = []; // [arena][state slot]  [arena floats]
  private dummies: { p: Tensor[]; g: Tensor } | null = null;
  private readonly opts: OptimizerOptions;
  private disposed = false;

  protected constructor(
    params: ParamSource,
    lr: number,
    protected readonly rule: Rule,
    opts: OptimizerOptions,
  ) {
    this.lr = lr;
    this.opts = opts;
    const list = namedList(params);
    const seenNames = new Set<string>();
    const seenTensors = new Set<Tensor>();
    for (const [name, p] of list) {
      if (seenNames.has(name)) throw new Error(`${rule.family}: two parameters are named '${name}'`);
      if (seenTensors.has(p)) throw new Error(`${rule.family}: parameter '${name}' is listed twice`);
      if (p.dtype !== 'f32') throw new Error(`${rule.family}: parameter '${name}' is ${p.describe()}, not f32`);
      seenNames.add(name);
      seenTensors.add(p);
    }
    // Pack state: parameters in order, a new arena when one binding could not hold more.
    const cap = Math.floor(Math.min(opts.arenaFloats ?? Infinity, rt().device.limits.maxStorageBufferBindingSize / 4) / 4) * 4;
    const sizes: number[] = [];
    this.entries = list.map(([name, param]) => {
      if (ceil4(param.size) > cap) throw new Error(`${rule.family}: parameter '${name}' (${param.size} floats) exceeds one storage binding (${cap} floats)`);
      let a = sizes.length - 1;
      if (a < 0 || sizes[a]! + ceil4(param.size) > cap) sizes.push(0), (a = sizes.length - 1);
      const offset = sizes[a]!; // 4-aligned: a parameter's state is whole vec4s
      sizes[a] = offset + ceil4(param.size);
      return { name, param, arena: a, offset, step: 0 };
    });
    untracked(() => {
      for (const n of sizes) {
        this.arenas.push(
          rule.state.map((_, si) => {
            const t = Tensor.empty([Math.max(4, n)]); // [arena floats]
            t.name = `${rule.family}.${rule.state[si]}`;
            return t;
          }),
        );
      }
    });
    for (const e of this.entries) this.resetState(e);
  }

  /** Parameter names in order. */
  get names(): string[] {
    return this.entries.map((e) => e.name);
  }

  /** Hyper-parameters for the state dict. */
  abstract hyper(): Record<string, number | boolean>;
  /** Restore hyper-parameters from a state dict. */
  protected abstract setHyper(h: Record<string, number | boolean>): void;
  /** Uniform values of the rule's members. */
  protected abstract uniforms(): Record<string, number>;
  /** Per-parameter coefficients for its `step`-th update (1-based). */
  protected abstract coef(step: number): [number, number, number, number];

  /** Parameters per launch on this device. */
  get slotsPerLaunch(): number {
    const maxSb = rt().device.limits.maxStorageBuffersPerShaderStage;
    const fit = Math.floor((maxSb - this.rule.state.length) / 2);
    return Math.max(1, Math.min(this.opts.slotsPerLaunch ?? DEFAULT_SLOTS_PER_LAUNCH, fit));
  }

  /**
   * Group the parameters to update into launches: one each for parameters of at least packBelow elements (the
   * per-slot switch would slow their elements down), up to slotsPerLaunch per launch for the small ones (their
   * launch overhead dominates). A launch stays within one state arena.
   */
  private launches(active: Entry[]): Entry[][] {
    const K = this.slotsPerLaunch;
    const packBelow = this.opts.packBelow ?? DEFAULT_PACK_BELOW;
    const out: Entry[][] = [];
    for (let a = 0; a < this.arenas.length; a++) {
      const small: Entry[] = [];
      for (const e of active) {
        if (e.arena !== a) continue;
        if (e.param.size >= packBelow || K === 1) out.push([e]);
        else small.push(e);
      }
      for (let i = 0; i < small.length; i += K) out.push(small.slice(i, i + K));
    }
    return out;
  }

  /** Step count of one parameter (0 until its first update). */
  stepOf(name: string): number {
    const e = this.entries.find((x) => x.name === name);
    if (!e) throw new Error(`${this.rule.family}: no parameter named '${name}'`);
    return e.step;
  }

  /** Update every parameter that has a gradient (records GPU work; no readback). */
  step(): void {
    if (this.disposed) throw new Error(`${this.rule.family}: step() after dispose()`);
    const active: Entry[] = [];
    for (const e of this.entries) {
      const g = e.param.grad;
      if (!g) continue;
      if (g.disposed) throw new Error(`${this.rule.family}: the gradient of '${e.name}' was disposed but not set to null`);
      if (g.size !== e.param.size || g.dtype !== 'f32') {
        throw new Error(`${this.rule.family}: gradient ${g.describe()} does not match parameter '${e.name}' ${e.param.describe()}`);
      }
      if (e.param.size === 0) continue;
      active.push(e);
    }
    const base = this.uniforms();
    for (const chunk of this.launches(active)) {
      const a = chunk[0]!.arena;
      const K = chunk.length === 1 ? 1 : this.slotsPerLaunch;
      // vec4 when every buffer of the launch has whole vec4s (pool buffers do); else the scalar kernel.
      const v4 = chunk.map((e) => [asVec4(e.param), asVec4(e.param.grad!)] as const);
      const vec4 = (this.opts.vec4 ?? true) && v4.every(([p, g]) => p && g);
      const bindings: Record<string, Bindable> = {};
      this.rule.state.forEach((_, si) => (bindings[`s${si}`] = this.arenas[a]![si]!));
      const slot = new Array<number>(4 * K).fill(0);
      const coef = new Array<number>(4 * K).fill(0);
      let wg = 0;
      for (let q = 0; q < K; q++) {
        const e = chunk[q];
        if (!e) {
          const d = this.dummy();
          bindings[`p${q}`] = d.p[q]!;
          bindings[`g${q}`] = d.g;
          slot[4 * q] = UNUSED;
          continue;
        }
        e.step++;
        const n = vec4 ? ceil4(e.param.size) / 4 : e.param.size;
        bindings[`p${q}`] = vec4 ? v4[q]![0]! : e.param;
        bindings[`g${q}`] = vec4 ? v4[q]![1]! : e.param.grad!;
        slot.splice(4 * q, 3, wg, n, vec4 ? e.offset / 4 : e.offset);
        coef.splice(4 * q, 4, ...this.coef(e.step));
        wg += ceilDiv(n, WG);
      }
      updateKernel(this.rule, K, vec4).run(bindings, { ...base, total_wg: wg, slot, coef });
    }
  }

  /** Unused slots bind these: distinct writable buffers (a writable binding may not alias another). */
  private dummy(): { p: Tensor[]; g: Tensor } {
    if (!this.dummies) {
      const K = this.slotsPerLaunch;
      this.dummies = untracked(() => ({
        p: Array.from({ length: K }, () => Tensor.empty([4])), // [4]: one vec4
        g: Tensor.empty([4]), // [4]
      }));
    }
    return this.dummies;
  }

  /** Drop every gradient (PyTorch's set_to_none=True) or, with setToNone false, zero it in place. */
  zeroGrad(setToNone = true): void {
    for (const { param } of this.entries) {
      if (!param.grad) continue;
      if (setToNone) {
        param.grad.dispose();
        param.grad = null;
      } else fillInPlace(param.grad, 0);
    }
  }

  /**
   * Copies of the state (caller owns the tensors) for parameters that have been updated at least once, as
   * `<param>.<slot>`, with per-parameter steps and the hyper-parameters.
   */
  stateDict(): OptimizerStateDict {
    const tensors = new Map<string, Tensor | TensorData>();
    const steps: Record<string, number> = {};
    for (const e of this.entries) {
      if (e.step === 0) continue;
      steps[e.name] = e.step;
      this.rule.state.forEach((s, si) => {
        const t = Tensor.empty(e.param.shape); // [...param]
        if (t.size) rt().queue.copy(this.arenas[e.arena]![si]!.buffer, e.offset * 4, t.buffer, 0, t.size * 4);
        tensors.set(`${e.name}.${s}`, t);
      });
    }
    return { kind: this.rule.family.replace(/_momentum$/, ''), hyper: this.hyper(), steps, tensors };
  }

  /** Replace the whole state (as PyTorch's load_state_dict): parameters absent from `sd.steps` start afresh. */
  loadStateDict(sd: OptimizerStateDict): void {
    const kind = this.rule.family.replace(/_momentum$/, '');
    if (sd.kind !== kind) throw new Error(`${kind}: cannot load the state of a '${sd.kind}' optimizer`);
    const byName = new Map(this.entries.map((e) => [e.name, e]));
    for (const name of Object.keys(sd.steps)) {
      if (!byName.has(name)) throw new StateDictError(name, `optimizer state for '${name}', which this ${kind} optimizer does not hold`);
    }
    const expected = new Set<string>();
    for (const e of this.entries) {
      const step = sd.steps[e.name] ?? 0;
      if (!Number.isInteger(step) || step < 0) throw new StateDictError(e.name, `step count ${step} is not a non-negative integer`);
      if (step === 0) {
        e.step = 0;
        this.resetState(e);
        continue;
      }
      for (const s of this.rule.state) {
        const key = `${e.name}.${s}`;
        expected.add(key);
        const t = sd.tensors.get(key);
        if (!t) throw new StateDictError(key, `missing ${kind} state '${s}' of parameter '${e.name}' (step ${step})`);
        if (t.dtype !== 'f32' || t.shape.length !== e.param.shape.length || t.shape.some((d, i) => d !== e.param.shape[i])) {
          throw new StateDictError(key, `is ${t.dtype}[${t.shape.join(', ')}], the parameter is ${e.param.describe()}`);
        }
      }
    }
    for (const key of sd.tensors.keys()) {
      if (!expected.has(key)) throw new StateDictError(key, `unexpected ${kind} state tensor`);
    }
    this.setHyper(sd.hyper);
    for (const e of this.entries) {
      const step = sd.steps[e.name] ?? 0;
      if (step === 0) continue;
      e.step = step;
      this.rule.state.forEach((s, si) => {
        const t = sd.tensors.get(`${e.name}.${s}`)!;
        const arena = this.arenas[e.arena]![si]!;
        if (e.param.size === 0) return;
        if (t instanceof Tensor) rt().queue.copy(t.buffer, 0, arena.buffer, e.offset * 4, e.param.size * 4);
        else this.writeArena(arena, e.offset, t.data as Float32Array);
      });
    }
  }

  private resetState(e: Entry): void {
    this.rule.state.forEach((_, si) => {
      if (e.param.size) this.writeArena(this.arenas[e.arena]![si]!, e.offset, new Float32Array(e.param.size).fill(this.rule.init[si]!));
    });
  }

  private writeArena(arena: Tensor, offset: number, data: Float32Array): void {
    rt().queue.flush(); // recorded work that reads the arena runs first
    rt().device.queue.writeBuffer(arena.buffer, offset * 4, data.buffer, data.byteOffset, data.byteLength);
  }

  /** Free the state (the parameters stay). */
  dispose(): void {
    for (const a of this.arenas) for (const t of a) t.dispose();
    this.arenas.length = 0;
    if (this.dummies) {
      for (const t of this.dummies.p) t.dispose();
      this.dummies.g.dispose();
    }
    this.dummies = null;
    this.disposed = true;
  }
}

function num(h: Record<string, number | boolean>, k: string, fallback: number): number {
  const v = h[k];
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new StateDictError(undefined, `hyper-parameter '${k}' = ${String(v)} is not a number`);
  return v;
}

// ------------------------------------------------------------------------------------------------ Adam
export interface AdamOptions extends OptimizerOptions {
  lr?: number;
  betas?: readonly [number, number];
  eps?: number;
  /** L2 penalty added to the gradient (torch.optim.Adam's weight_decay, not AdamW). */
  weightDecay?: number;
}

const ADAM: Rule = {
  family: 'adam',
  state: ['exp_avg', 'exp_avg_sq'],
  init: [0, 0],
  members: 'beta1: f32, one_minus_beta1: f32, beta2: f32, one_minus_beta2: f32, eps: f32, weight_decay: f32,',
  body: /* wgsl */ `
    let gg = g + u.weight_decay * x;
    let m = u.beta1 * s0[j] + u.one_minus_beta1 * gg;
    let v = u.beta2 * s1[j] + u.one_minus_beta2 * gg * gg;
    s0[j] = m;
    s1[j] = v;
    x = x - c.x * m / (sqrt(v) / c.y + u.eps);   // c.x = lr / (1 - beta1^t), c.y = sqrt(1 - beta2^t)`,
};

/** torch.optim.Adam (amsgrad off, L2 weight decay). Defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8. */
export class Adam extends Optimizer {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  constructor(params: ParamSource, o: AdamOptions = {}) {
    super(params, o.lr ?? 1e-3, ADAM, o);
    [this.beta1, this.beta2] = o.betas ?? [0.9, 0.999];
    this.eps = o.eps ?? 1e-8;
    this.weightDecay = o.weightDecay ?? 0;
  }
  hyper(): Record<string, number> {
    return { lr: this.lr, beta1: this.beta1, beta2: this.beta2, eps: this.eps, weightDecay: this.weightDecay };
  }
  protected setHyper(h: Record<string, number | boolean>): void {
    this.lr = num(h, 'lr', this.lr);
    this.beta1 = num(h, 'beta1', this.beta1);
    this.beta2 = num(h, 'beta2', this.beta2);
    this.eps = num(h, 'eps', this.eps);
    this.weightDecay = num(h, 'weightDecay', this.weightDecay);
  }
  protected uniforms(): Record<string, number> {
    const { beta1, beta2 } = this;
    return { beta1, one_minus_beta1: 1 - beta1, beta2, one_minus_beta2: 1 - beta2, eps: this.eps, weight_decay: this.weightDecay };
  }
  protected coef(t: number): [number, number, number, number] {
    return [this.lr / (1 - this.beta1 ** t), Math.sqrt(1 - this.beta2 ** t), 0, 0];
  }
}

// ------------------------------------------------------------------------------------------------ Adagrad
export interface AdagradOptions extends OptimizerOptions {
  lr?: number;
  /** Starting value of the accumulator (TF's initial_accumulator_value, default 0.1; AttRec uses 0.05). */
  initialAccumulatorValue?: number;
  /** Added to sqrt(acc) (TF: none, so 0; PyTorch uses 1e-10). */
  eps?: number;
  weightDecay?: number;
}

const ADAGRAD = (init: number): Rule => ({
  family: 'adagrad',
  state: ['accumulator'],
  init: [init],
  members: 'lr: f32, eps: f32, weight_decay: f32,',
  body: /* wgsl */ `
    let gg = g + u.weight_decay * x;
    let a = s0[j] + gg * gg;
    s0[j] = a;
    x = x - u.lr * gg / (sqrt(a) + u.eps);`,
});

/** tf.train.AdagradOptimizer: acc += g^2; p -= lr * g / sqrt(acc). Defaults: lr 0.01, initial accumulator 0.1. */
export class Adagrad extends Optimizer {
  eps: number;
  weightDecay: number;
  readonly initialAccumulatorValue: number;
  constructor(params: ParamSource, o: AdagradOptions = {}) {
    const init = o.initialAccumulatorValue ?? 0.1;
    const eps = o.eps ?? 0;
    if (!(init > 0) && !(eps > 0)) throw new Error(`adagrad: initialAccumulatorValue ${init} with eps 0 divides 0 by 0 for zero gradients`);
    super(params, o.lr ?? 0.01, ADAGRAD(init), o);
    this.initialAccumulatorValue = init;
    this.eps = eps;
    this.weightDecay = o.weightDecay ?? 0;
  }
  hyper(): Record<string, number> {
    return { lr: this.lr, eps: this.eps, weightDecay: this.weightDecay, initialAccumulatorValue: this.initialAccumulatorValue };
  }
  protected setHyper(h: Record<string, number | boolean>): void {
    this.lr = num(h, 'lr', this.lr);
    this.eps = num(h, 'eps', this.eps);
    this.weightDecay = num(h, 'weightDecay', this.weightDecay);
  }
  protected uniforms(): Record<string, number> {
    return { lr: this.lr, eps: this.eps, weight_decay: this.weightDecay };
  }
  protected coef(): [number, number, number, number] {
    return [0, 0, 0, 0];
  }
}

// ------------------------------------------------------------------------------------------------ SGD
export interface SGDOptions extends OptimizerOptions {
  lr?: number;
  momentum?: number;
  dampening?: number;
  nesterov?: boolean;
  weightDecay?: number;
}

const SGD_PLAIN: Rule = {
  family: 'sgd',
  state: [],
  init: [],
  members: 'lr: f32, weight_decay: f32,',
  body: /* wgsl */ `
    x = x - u.lr * (g + u.weight_decay * x);`,
};

const SGD_MOMENTUM: Rule = {
  family: 'sgd_momentum',
  state: ['momentum_buffer'],
  init: [0],
  members: 'lr: f32, weight_decay: f32, momentum: f32, one_minus_dampening: f32, nesterov: u32,',
  body: /* wgsl */ `
    let d = g + u.weight_decay * x;
    var b = d;                                           // first step (c.x = 1): buf = d
    if (c.x == 0.0) { b = u.momentum * s0[j] + u.one_minus_dampening * d; }
    s0[j] = b;
    var upd = b;
    if (u.nesterov != 0u) { upd = d + u.momentum * b; }
    x = x - u.lr * upd;`,
};

/** torch.optim.SGD. With momentum 0 it keeps no state. */
export class SGD extends Optimizer {
  momentum: number;
  dampening: number;
  nesterov: boolean;
  weightDecay: number;
  constructor(params: ParamSource, o: SGDOptions = {}) {
    const momentum = o.momentum ?? 0;
    if (o.nesterov && (momentum <= 0 || (o.dampening ?? 0) !== 0)) throw new Error('sgd: nesterov needs momentum > 0 and dampening 0');
    super(params, o.lr ?? 1e-3, momentum !== 0 ? SGD_MOMENTUM : SGD_PLAIN, o);
    this.momentum = momentum;
    this.dampening = o.dampening ?? 0;
    this.nesterov = o.nesterov ?? false;
    this.weightDecay = o.weightDecay ?? 0;
  }
  hyper(): Record<string, number | boolean> {
    return { lr: this.lr, momentum: this.momentum, dampening: this.dampening, nesterov: this.nesterov, weightDecay: this.weightDecay };
  }
  protected setHyper(h: Record<string, number | boolean>): void {
    this.lr = num(h, 'lr', this.lr);
    const m = num(h, 'momentum', this.momentum);
    if ((m !== 0) !== (this.momentum !== 0)) throw new StateDictError(undefined, `momentum ${m} needs another kind of SGD state than momentum ${this.momentum}`);
    this.momentum = m;
    this.dampening = num(h, 'dampening', this.dampening);
    if (h.nesterov !== undefined) this.nesterov = Boolean(h.nesterov);
    this.weightDecay = num(h, 'weightDecay', this.weightDecay);
  }
  protected uniforms(): Record<string, number> {
    const u: Record<string, number> = { lr: this.lr, weight_decay: this.weightDecay };
    if (this.momentum !== 0) Object.assign(u, { momentum: this.momentum, one_minus_dampening: 1 - this.dampening, nesterov: this.nesterov ? 1 : 0 });
    return u;
  }
  protected coef(t: number): [number, number, number, number] {
    return [t === 1 ? 1 : 0, 0, 0, 0];
  }
}

// ------------------------------------------------------------------------------------------------ float64 references
/** One Adam update in float64, in place on p, m, v (t is the 1-based step of this parameter). */
export function refAdamStep(
  p: Float64Array, g: ArrayLike<number>, m: Float64Array, v: Float64Array, t: number,
  h: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number },
): void {
  const stepSize = h.lr / (1 - h.beta1 ** t);
  const bc2sqrt = Math.sqrt(1 - h.beta2 ** t);
  for (let i = 0; i < p.length; i++) {
    const gg = g[i]! + h.weightDecay * p[i]!;
    m[i] = h.beta1 * m[i]! + (1 - h.beta1) * gg;
    v[i] = h.beta2 * v[i]! + (1 - h.beta2) * gg * gg;
    p[i] = p[i]! - (stepSize * m[i]!) / (Math.sqrt(v[i]!) / bc2sqrt + h.eps);
  }
}

/** One TF Adagrad update in float64, in place on p and acc. */
export function refAdagradStep(
  p: Float64Array, g: ArrayLike<number>, acc: Float64Array,
  h: { lr: number; eps: number; weightDecay: number },
): void {
  for (let i = 0; i < p.length; i++) {
    const gg = g[i]! + h.weightDecay * p[i]!;
    acc[i] = acc[i]! + gg * gg;
    p[i] = p[i]! - (h.lr * gg) / (Math.sqrt(acc[i]!) + h.eps);
  }
}

/** One SGD update in float64, in place on p and buf (buf ignored without momentum; t is 1-based). */
export function refSgdStep(
  p: Float64Array, g: ArrayLike<number>, buf: Float64Array, t: number,
  h: { lr: number; momentum: number; dampening: number; nesterov: boolean; weightDecay: number },
): void {
  for (let i = 0; i < p.length; i++) {
    let d = g[i]! + h.weightDecay * p[i]!;
    if (h.momentum !== 0) {
      buf[i] = t === 1 ? d : h.momentum * buf[i]! + (1 - h.dampening) * d;
      d = h.nesterov ? d + h.momentum * buf[i]! : buf[i]!;
    }
    p[i] = p[i]! - h.lr * d;
  }
}
