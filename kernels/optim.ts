// kernels/optim.ts — the optimizer update kernels: Adam (PyTorch), Adagrad (TF's AdagradOptimizer), SGD (PyTorch,
// optional momentum), with their float64 references. models/optim.ts holds the optimizers themselves (parameter
// lists, state arenas, step counts, launch grouping, state dicts) and records its updates through optimUpdate().
//
// What an update computes, per parameter element p with gradient g (t = the parameter's 1-based step):
//   adam          g' = g + wd*p; m = b1*m + (1-b1)*g'; v = b2*v + (1-b2)*g'^2;
//                 p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)       (torch.optim.Adam, amsgrad off)
//   adagrad       g' = g + wd*p; acc += g'^2; p -= lr * g' / (sqrt(acc) + eps)          (TF: eps 0)
//   sgd           p -= lr * (g + wd*p)
//   sgd_momentum  d = g + wd*p; buf = d on the first step, else mu*buf + (1-dampening)*d;
//                 p -= lr * (nesterov ? d + mu*buf : buf)                                (torch.optim.SGD)
// Step-dependent scalars (lr / (1-b1^t), sqrt(1-b2^t), the first-step flag) are computed on the host in float64
// (adamCoef, sgdCoef) and enter the kernel as per-parameter uniforms with the hyper-parameters: a step never
// reads anything back, and changing lr never recompiles.
//
// Kernels `<rule>{K=k,vec4}`: one launch updates up to K parameters (multi-tensor apply, as PyTorch's foreach);
// one thread per element, or per vec4 (`vec4`: the parameter and gradient buffers are bound rounded up to whole
// vec4s; every pool buffer has that slack, so the tail of an n % 4 != 0 parameter is updated in its padding,
// which nothing reads). The state of all parameters lives in one buffer per state slot (an arena), each
// parameter at a 4-aligned offset: a launch binds the arenas plus K (param, grad) pairs, and workgroup w finds its
// parameter q from the per-slot first workgroups in the uniform (a loop over the K slots, then a switch on q).
// Memory traffic per element: adam reads 4 floats and writes 3; adagrad 3 / 2; sgd 2 (+1 with momentum) / 1 (+1).
// Variants and their measurements (launch grouping, scalar vs vec4, composed): models/optim.ts's header.
import { ceilDiv, loopCost, Tensor, type Bindable, type Kernel } from '../engine/index.js';
import { FOLDED_GROUP, kernelFamily, unroll } from './common.js';

/** Threads per workgroup of the update kernels. */
export const OPTIM_WG = 256;
/** slot.x of an unused slot (its workgroups never match). */
const UNUSED = 0xffffffff;

/** How one optimizer updates an element: the WGSL of its kernel. */
export interface OptimRule {
  /** Kernel family name: adam | adagrad | sgd | sgd_momentum. */
  family: 'adam' | 'adagrad' | 'sgd' | 'sgd_momentum';
  /** State slot names (the names in a state dict: `<param>.<slot>`), one arena each: bindings s0, s1, ... */
  state: readonly string[];
  /** Uniform members for the hyper-parameters, e.g. `lr: f32, eps: f32,`. */
  members: string;
  /**
   * WGSL that updates `x` (the parameter element: an f32 or a vec4<f32>, per kernel variant) from `g` (its
   * gradient), the state arrays s0.. at index j, `c` (this parameter's vec4<f32> of per-step coefficients) and the
   * uniform `u`. Written so that it type-checks for both widths (scalar hyper-parameters broadcast).
   */
  body: string;
}

const ADAM: OptimRule = {
  family: 'adam',
  state: ['exp_avg', 'exp_avg_sq'],
  members: 'beta1: f32, one_minus_beta1: f32, beta2: f32, one_minus_beta2: f32, eps: f32, weight_decay: f32,',
  body: /* wgsl */ `
  let gg = g + u.weight_decay * x;
  let m = u.beta1 * s0[j] + u.one_minus_beta1 * gg;
  let v = u.beta2 * s1[j] + u.one_minus_beta2 * gg * gg;
  s0[j] = m;
  s1[j] = v;
  x = x - c.x * m / (sqrt(v) / c.y + u.eps);   // c.x = lr / (1 - beta1^t), c.y = sqrt(1 - beta2^t)`,
};

const ADAGRAD: OptimRule = {
  family: 'adagrad',
  state: ['accumulator'],
  members: 'lr: f32, eps: f32, weight_decay: f32,',
  body: /* wgsl */ `
  let gg = g + u.weight_decay * x;
  let a = s0[j] + gg * gg;
  s0[j] = a;
  x = x - u.lr * gg / (sqrt(a) + u.eps);`,
};

const SGD: OptimRule = {
  family: 'sgd',
  state: [],
  members: 'lr: f32, weight_decay: f32,',
  body: /* wgsl */ `
  x = x - u.lr * (g + u.weight_decay * x);`,
};

const SGD_MOMENTUM: OptimRule = {
  family: 'sgd_momentum',
  state: ['momentum_buffer'],
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

/** The update rules by kernel family name. */
export const OPTIM_RULES: Readonly<Record<OptimRule['family'], OptimRule>> = { adam: ADAM, adagrad: ADAGRAD, sgd: SGD, sgd_momentum: SGD_MOMENTUM };

// ------------------------------------------------------------------ hyper-parameters and per-step coefficients
export interface AdamHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}
export interface AdagradHyper {
  lr: number;
  eps: number;
  weightDecay: number;
}
export interface SgdHyper {
  lr: number;
  momentum: number;
  dampening: number;
  nesterov: boolean;
  weightDecay: number;
}

type Coef = [number, number, number, number];

/** Adam's uniform members from the hyper-parameters (lr enters through the per-step coefficient). */
export const adamUniforms = (h: AdamHyper): Record<string, number> => ({
  beta1: h.beta1,
  one_minus_beta1: 1 - h.beta1,
  beta2: h.beta2,
  one_minus_beta2: 1 - h.beta2,
  eps: h.eps,
  weight_decay: h.weightDecay,
});
/** Adam's coefficients for step t: lr / (1 - beta1^t), sqrt(1 - beta2^t) (float64, as PyTorch). */
export const adamCoef = (h: AdamHyper, t: number): Coef => [h.lr / (1 - h.beta1 ** t), Math.sqrt(1 - h.beta2 ** t), 0, 0];

export const adagradUniforms = (h: AdagradHyper): Record<string, number> => ({ lr: h.lr, eps: h.eps, weight_decay: h.weightDecay });

export function sgdUniforms(h: SgdHyper): Record<string, number> {
  const u: Record<string, number> = { lr: h.lr, weight_decay: h.weightDecay };
  if (h.momentum !== 0) Object.assign(u, { momentum: h.momentum, one_minus_dampening: 1 - h.dampening, nesterov: h.nesterov ? 1 : 0 });
  return u;
}
/** SGD's coefficients for step t: c.x = 1 on the first step (the momentum buffer starts as d). */
export const sgdCoef = (t: number): Coef => [t === 1 ? 1 : 0, 0, 0, 0];

// ------------------------------------------------------------------ the kernels
/** The storage declarations: the state arenas s0.., then K (parameter, gradient) pairs. */
function declarations(rule: OptimRule, K: number, T: string, unit: string): string {
  const S = rule.state.length;
  const state = rule.state.map((s, i) => `@group(0) @binding(${1 + i}) var<storage, read_write> s${i}: array<${T}>; // [arena ${unit}] ${s}, packed`);
  const params = Array.from({ length: K }, (_, q) => [
    `@group(0) @binding(${1 + S + 2 * q}) var<storage, read_write> p${q}: array<${T}>; // [n_${q}] parameter ${q}`,
    `@group(0) @binding(${2 + S + 2 * q}) var<storage, read> g${q}: array<${T}>;       // [n_${q}] its gradient`,
  ]).flat();
  return [...state, ...params].join('\n');
}

/** The update kernel of a rule for up to K parameters per launch, one f32 or one vec4 per thread: `adam{K=7,vec4}`. */
const updateKernels = Object.fromEntries(
  (Object.keys(OPTIM_RULES) as Array<OptimRule['family']>).map((family) => [
    family,
    kernelFamily(family, ({ K, vec4 }: { K: number; vec4: boolean }) => {
      const rule = OPTIM_RULES[family];
      const T = vec4 ? 'vec4<f32>' : 'f32';
      const unit = vec4 ? 'vec4s' : 'floats';
      return {
        foldable: true,
        wgsl: /* wgsl */ `
// ${family}: one launch updates up to ${K} parameters, one ${T} per thread. slot[q] = (first workgroup, n in ${unit},
// state offset in ${unit}, -) of parameter q (unused slots start at 0xffffffff); coef[q] = its per-step
// coefficients. Thread i of the parameter's range updates element i; its state sits at s*[slot.z + i].
struct Params { ${rule.members} total_wg: u32, slot: array<vec4<u32>, ${K}>, coef: array<vec4<f32>, ${K}> }
@group(0) @binding(0) var<uniform> u: Params;
${declarations(rule, K, T, unit)}
@compute @workgroup_size(${OPTIM_WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let w = ${FOLDED_GROUP};
  var q = 0u;
  for (var k = 1u; k < ${K}u; k = k + 1u) { if (w >= u.slot[k].x) { q = k; } }
  let sl = u.slot[q];
  let i = (w - sl.x) * ${OPTIM_WG}u + lid.x;
  if (w >= u.total_wg || i >= sl.y) { return; }
  let j = sl.z + i;
  let c = u.coef[q];
  var g = ${T}();
  var x = ${T}();
  switch q {
${unroll(K, '    case {q}u: { g = g{q}[i]; x = p{q}[i]; }', 'q')}
    default: {}
  }
${rule.body.replace(/^\n/, '')}
  switch q {
${unroll(K, '    case {q}u: { p{q}[i] = x; }', 'q')}
    default: {}
  }
}`,
        grid: ({ total_wg }) => [total_wg!],
        // One loop: the slot search over the K parameters of the launch (a constant bound).
        loopTrips: loopCost(K - 1),
      };
    }),
  ]),
) as Record<OptimRule['family'], (p: { K: number; vec4: boolean }) => Kernel>;

/** One parameter of a launch: its buffers (whole vec4s for the vec4 kernel), size and state offset in units. */
export interface UpdateSlot {
  p: Bindable;
  g: Bindable;
  /** Elements to update, in units (vec4s for the vec4 kernel, else floats). */
  n: number;
  /** Offset of the parameter's state in the arenas, in units. */
  offset: number;
  /** Per-step coefficients (adamCoef, sgdCoef; zeros for adagrad). */
  coef: readonly number[];
}

/**
 * Record one update launch of `rule` over `slots` (K = slots.length; a null slot is unused and binds
 * spare.p[q] / spare.g: distinct writable buffers, a writable binding may not alias another). `state` are the
 * rule's arenas in order, `uniforms` its hyper-parameter members.
 */
export function optimUpdate(
  rule: OptimRule,
  state: readonly Bindable[],
  slots: ReadonlyArray<UpdateSlot | null>,
  uniforms: Record<string, number>,
  vec4: boolean,
  spare?: { p: readonly Bindable[]; g: Bindable },
): void {
  const K = slots.length;
  const bindings: Record<string, Bindable> = {};
  rule.state.forEach((_, si) => (bindings[`s${si}`] = state[si]!));
  const slot = new Array<number>(4 * K).fill(0);
  const coef = new Array<number>(4 * K).fill(0);
  let wg = 0;
  slots.forEach((e, q) => {
    if (!e) {
      if (!spare) throw new Error(`${rule.family}: slot ${q} is unused and no spare buffers were given`);
      bindings[`p${q}`] = spare.p[q]!;
      bindings[`g${q}`] = spare.g;
      slot[4 * q] = UNUSED;
      return;
    }
    bindings[`p${q}`] = e.p;
    bindings[`g${q}`] = e.g;
    slot.splice(4 * q, 3, wg, e.n, e.offset);
    coef.splice(4 * q, 4, ...e.coef);
    wg += ceilDiv(e.n, OPTIM_WG);
  });
  updateKernels[rule.family]({ K, vec4 }).run(bindings, { ...uniforms, total_wg: wg, slot, coef });
}

/** The tensor's buffer rounded up to whole vec4s, if the buffer has that much (pool buffers always do). */
export function vec4View(t: Tensor): Bindable | null {
  const bytes = Math.ceil(t.size / 4) * 16;
  if (t.byteOffset !== 0 || t.buffer.size < bytes) return null;
  return { buffer: t.buffer, byteOffset: 0, byteLength: bytes, dtype: 'f32', disposed: t.disposed };
}

// ------------------------------------------------------------------ one tensor at a time
/** One parameter's update, in place on p and its state tensors (the vec4 kernel when every buffer allows it). */
function updateOne(rule: OptimRule, p: Tensor, g: Tensor, state: Tensor[], uniforms: Record<string, number>, coef: Coef, vec4 = true): void {
  for (const [what, t] of [['gradient', g], ...state.map((s, i) => [rule.state[i]!, s] as const)] as const) {
    if (t.dtype !== 'f32' || t.size !== p.size) throw new Error(`${rule.family}: ${what} ${t.describe()} does not match the parameter ${p.describe()}`);
  }
  if (p.dtype !== 'f32') throw new Error(`${rule.family}: parameter ${p.describe()} is not f32`);
  if (p.size === 0) return;
  const views = [p, g, ...state].map(vec4View);
  const v4 = vec4 && views.every((v) => v !== null);
  const n = v4 ? Math.ceil(p.size / 4) : p.size;
  optimUpdate(rule, v4 ? views.slice(2) as Bindable[] : state, [{ p: v4 ? views[0]! : p, g: v4 ? views[1]! : g, n, offset: 0, coef }], uniforms, v4);
}

/** One Adam step t (1-based) in place: p, and its state m (exp_avg), v (exp_avg_sq). */
export function adamUpdate(p: Tensor, g: Tensor, m: Tensor, v: Tensor, t: number, h: AdamHyper, o: { vec4?: boolean } = {}): void {
  updateOne(ADAM, p, g, [m, v], adamUniforms(h), adamCoef(h, t), o.vec4);
}

/** One Adagrad step in place: p and its accumulator. */
export function adagradUpdate(p: Tensor, g: Tensor, acc: Tensor, h: AdagradHyper, o: { vec4?: boolean } = {}): void {
  updateOne(ADAGRAD, p, g, [acc], adagradUniforms(h), [0, 0, 0, 0], o.vec4);
}

/** One SGD step t (1-based) in place: p, and with momentum != 0 its momentum buffer (else pass null). */
export function sgdUpdate(p: Tensor, g: Tensor, buf: Tensor | null, t: number, h: SgdHyper, o: { vec4?: boolean } = {}): void {
  if ((h.momentum !== 0) !== (buf !== null)) throw new Error('sgd: a momentum buffer goes with momentum != 0, and only then');
  updateOne(h.momentum !== 0 ? SGD_MOMENTUM : SGD, p, g, buf ? [buf] : [], sgdUniforms(h), sgdCoef(t), o.vec4);
}

// ------------------------------------------------------------------ float64 references
/** One Adam update in float64, in place on p, m, v (t is the 1-based step of this parameter). */
export function refAdam(p: Float64Array, g: ArrayLike<number>, m: Float64Array, v: Float64Array, t: number, h: AdamHyper): void {
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
export function refAdagrad(p: Float64Array, g: ArrayLike<number>, acc: Float64Array, h: AdagradHyper): void {
  for (let i = 0; i < p.length; i++) {
    const gg = g[i]! + h.weightDecay * p[i]!;
    acc[i] = acc[i]! + gg * gg;
    p[i] = p[i]! - (h.lr * gg) / (Math.sqrt(acc[i]!) + h.eps);
  }
}

/** One SGD update in float64, in place on p and buf (buf ignored without momentum; t is 1-based). */
export function refSgd(p: Float64Array, g: ArrayLike<number>, buf: Float64Array, t: number, h: SgdHyper): void {
  for (let i = 0; i < p.length; i++) {
    let d = g[i]! + h.weightDecay * p[i]!;
    if (h.momentum !== 0) {
      buf[i] = t === 1 ? d : h.momentum * buf[i]! + (1 - h.dampening) * d;
      d = h.nesterov ? d + h.momentum * buf[i]! : buf[i]!;
    }
    p[i] = p[i]! - h.lr * d;
  }
}
