// models/optim.ts — optimizers: Adam (PyTorch), Adagrad (TF's AdagradOptimizer), SGD (PyTorch, optional momentum).
// The update kernels and their float64 references are in kernels/optim.ts; this file holds the optimizers: the
// parameter list, the packed state arenas, step counts, launch grouping, state dicts.
//
// Parameters whose .grad is null are SKIPPED entirely: no update, no state change, their step count does not
// advance (PyTorch's rule, which S3-Rec relies on for the pretraining heads during fine-tuning). The update
// formulas, the per-step coefficients (computed on the host in float64 from the host-side step count, as PyTorch
// does) and the kernels' layout are documented in kernels/optim.ts.
//
// The state of all parameters is packed into one buffer per state slot (the "arena", 4-float aligned offsets), so
// one launch updates several parameters (multi-tensor apply, as PyTorch's foreach); a step reads nothing back.
// Variants (bench/optim.bench.ts, at S3-Rec's Adam = 45 tensors / 935,360 floats and AttRec's Adagrad = 5 tensors /
// 810,300 floats; rows optim.adam.* / optim.adagrad.*):
//   step         the default: a launch of its own for each parameter of >= packBelow (32768) floats, up to
//                slotsPerLaunch (7, the most the 16 storage buffers allow Adam) smaller ones per launch: 9 launches
//                for S3-Rec, 5 for AttRec. Fastest for Adam, level with k1 for Adagrad.
//   step_k1      one launch per parameter (slotsPerLaunch 1): more launches (45 for S3-Rec), slower for Adam.
//   step_k7all   7 per launch whatever the size: slower still. llvmpipe cannot tell that the per-slot switch is
//                uniform per workgroup and runs every case masked, so each element of a packed launch pays K loads;
//                hence large parameters run alone.
//   step_scalar  one float per thread instead of one vec4: the slowest of the kernels.
//   composed     Adam from unfused elementwise ops (~16 dispatches per parameter): far slower than any of them.
// Timings: `npm run bench -- optim.adam optim.adagrad` / docs/BENCHMARKS.md.
import { fillInPlace, markWritten, rt, Tensor, untracked, type Bindable } from '../engine/index.js';
import {
  adagradUniforms,
  adamCoef,
  adamUniforms,
  OPTIM_RULES,
  optimUpdate,
  sgdCoef,
  sgdUniforms,
  vec4View,
  type OptimRule,
  type UpdateSlot,
} from '../kernels/optim.js';
import type { TensorData } from '../engine/safetensors.js';
import { StateDictError, type OptimizerStateDict } from './checkpoint.js';

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

/** An optimizer family: its update kernel (kernels/optim.ts) and the initial value of each state slot. */
interface Rule extends OptimRule {
  init: readonly number[];
}

interface Entry {
  name: string;
  param: Tensor;
  arena: number;
  /** Offset of this parameter's state in its arena (floats). */
  offset: number;
  step: number;
}

const ceil4 = (n: number): number => Math.ceil(n / 4) * 4;

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

  /**
   * For a fused kernel that applies this optimizer's update itself (kernels/attrec_step.ts): the state arenas of
   * `param` (one per state slot, in the rule's order) and its offset in them, in floats. Counts one step for the
   * parameter, as step() would: call it once per update the kernel makes.
   */
  externalStep(param: Tensor): { state: Tensor[]; offset: number } {
    if (this.disposed) throw new Error(`${this.rule.family}: externalStep() after dispose()`);
    const e = this.entries.find((x) => x.param === param);
    if (!e) throw new Error(`${this.rule.family}: ${param.describe()} is not one of this optimizer's parameters`);
    e.step++;
    return { state: this.arenas[e.arena]!, offset: e.offset };
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
    const uniforms = this.uniforms();
    for (const chunk of this.launches(active)) {
      const a = chunk[0]!.arena;
      const K = chunk.length === 1 ? 1 : this.slotsPerLaunch;
      // vec4 when every buffer of the launch has whole vec4s (pool buffers do); else the scalar kernel.
      const v4 = chunk.map((e) => [vec4View(e.param), vec4View(e.param.grad!)] as const);
      const vec4 = (this.opts.vec4 ?? true) && v4.every(([p, g]) => p && g);
      const slots = Array.from({ length: K }, (_, q): UpdateSlot | null => {
        const e = chunk[q];
        if (!e) return null;
        e.step++;
        return {
          p: vec4 ? v4[q]![0]! : e.param,
          g: vec4 ? v4[q]![1]! : e.param.grad!,
          n: vec4 ? ceil4(e.param.size) / 4 : e.param.size,
          offset: vec4 ? e.offset / 4 : e.offset,
          coef: this.coef(e.step),
        };
      });
      optimUpdate(this.rule, this.arenas[a]!, slots, uniforms, vec4, chunk.length < K ? this.dummy() : undefined);
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
    markWritten(arena.buffer);
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

const ADAM: Rule = { ...OPTIM_RULES.adam, init: [0, 0] };

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
    return adamUniforms(this);
  }
  protected coef(t: number): [number, number, number, number] {
    return adamCoef(this, t);
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

const ADAGRAD = (init: number): Rule => ({ ...OPTIM_RULES.adagrad, init: [init] });

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
    return adagradUniforms(this);
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

const SGD_PLAIN: Rule = { ...OPTIM_RULES.sgd, init: [] };
const SGD_MOMENTUM: Rule = { ...OPTIM_RULES.sgd_momentum, init: [0] };

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
    return sgdUniforms(this);
  }
  protected coef(t: number): [number, number, number, number] {
    return sgdCoef(t);
  }
}

// ------------------------------------------------------------------------------------------------ float64 references
// In kernels/optim.ts beside the kernels; re-exported under their earlier names.
export { refAdam as refAdamStep, refAdagrad as refAdagradStep, refSgd as refSgdStep } from '../kernels/optim.js';
