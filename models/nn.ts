// models/nn.ts — modules with PyTorch-style names: Module (parameters, buffers, submodules, state dicts,
// train/eval), ModuleList, Linear, Embedding, LayerNorm, Dropout.
//
// Names: a module registers each parameter/buffer/child under the name PyTorch's state dict uses, so dotted paths
// come out as `item_encoder.layer.0.attention.query.weight` (S3REC_SPEC §3) and official checkpoints load as they
// are. TypeScript fields may be camelCase; the registered name is what counts. Order is PyTorch's: a module's own
// parameters, then its buffers, then each child in registration order (depth first).
// Lifetimes: registered tensors are taken out of every scope (keep) and belong to the module until dispose().
// Layers call the op library (kernels/): Linear = matmul(x, W, {transB}) + b with W [out, in] (PyTorch layout).
import { copyInto, fillInPlace, keep, reshape, Tensor, type Shape } from '../engine/index.js';
import type { TensorData } from '../engine/safetensors.js';
import { StateDictError } from './checkpoint.js';
import { dropout, embedding, layerNorm, linear, matmul, type EmbeddingOptions } from '../kernels/index.js';
import { fillRow_, normal_, ones_, uniform_, zeros_ } from './init.js';

export type StateDictInput = Map<string, Tensor | TensorData> | Record<string, Tensor | TensorData>;

export interface LoadResult {
  /** Model tensors the dict lacks (strict: false only; strict throws). */
  missing: string[];
  /** Dict entries the model lacks. */
  unexpected: string[];
}

function checkName(owner: string, name: string): void {
  if (!name || name.includes('.')) throw new Error(`${owner}: invalid name '${name}' (non-empty, no dots)`);
}

export class Module {
  /** Training mode (Dropout is active only while true). */
  training = true;
  private readonly params = new Map<string, Tensor>();
  private readonly buffers = new Map<string, Tensor>();
  private readonly children = new Map<string, Module>();

  private claim(name: string): void {
    checkName(this.constructor.name, name);
    if (this.params.has(name) || this.buffers.has(name) || this.children.has(name)) {
      throw new Error(`${this.constructor.name}: '${name}' is already registered`);
    }
  }

  /** Register a trainable f32 tensor (requireGrad is set; the module owns it). */
  registerParameter(name: string, t: Tensor): Tensor {
    this.claim(name);
    t.requireGrad();
    t.name = name;
    this.params.set(name, keep(t));
    return t;
  }

  /** Register non-trainable state that belongs in the state dict. */
  registerBuffer(name: string, t: Tensor): Tensor {
    this.claim(name);
    t.name = name;
    this.buffers.set(name, keep(t));
    return t;
  }

  registerModule<M extends Module>(name: string, m: M): M {
    this.claim(name);
    this.children.set(name, m);
    return m;
  }

  /** [dotted name, module] for this module ('') and every descendant, depth first. */
  namedModules(prefix = ''): Array<[string, Module]> {
    const out: Array<[string, Module]> = [[prefix, this]];
    for (const [n, c] of this.children) out.push(...c.namedModules(prefix ? `${prefix}.${n}` : n));
    return out;
  }

  namedParameters(): Array<[string, Tensor]> {
    const out: Array<[string, Tensor]> = [];
    for (const [p, m] of this.namedModules()) for (const [n, t] of m.params) out.push([p ? `${p}.${n}` : n, t]);
    return out;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  namedBuffers(): Array<[string, Tensor]> {
    const out: Array<[string, Tensor]> = [];
    for (const [p, m] of this.namedModules()) for (const [n, t] of m.buffers) out.push([p ? `${p}.${n}` : n, t]);
    return out;
  }

  /** Total number of parameter elements. */
  numParameters(): number {
    return this.parameters().reduce((s, t) => s + t.size, 0);
  }

  /** Parameters and buffers by dotted name (the live tensors, not copies), in PyTorch's order. */
  stateDict(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const [p, m] of this.namedModules()) {
      for (const [n, t] of m.params) out.set(p ? `${p}.${n}` : n, t);
      for (const [n, t] of m.buffers) out.set(p ? `${p}.${n}` : n, t);
    }
    return out;
  }

  /**
   * Copy values into the parameters and buffers (in place: optimizers keep their references). Everything is
   * checked before anything is written: a dtype or shape mismatch throws a StateDictError naming the tensor; with
   * strict (default) so do missing and unexpected names.
   */
  loadStateDict(dict: StateDictInput, opts: { strict?: boolean } = {}): LoadResult {
    const strict = opts.strict ?? true;
    const src = dict instanceof Map ? dict : new Map(Object.entries(dict));
    const own = this.stateDict();
    const missing: string[] = [];
    const todo: Array<[Tensor, Tensor | TensorData]> = [];
    for (const [name, t] of own) {
      const s = src.get(name);
      if (!s) {
        missing.push(name);
        continue;
      }
      const same = s.shape.length === t.shape.length && s.shape.every((d, i) => d === t.shape[i]);
      if (s.dtype !== t.dtype || !same) {
        throw new StateDictError(name, `the state dict has ${s.dtype}[${s.shape.join(', ')}], the model's ${t.dtype}[${t.shape.join(', ')}]`);
      }
      if (!(s instanceof Tensor) && s.data.length !== t.size) throw new StateDictError(name, `${s.data.length} values for ${t.describe()}`);
      todo.push([t, s]);
    }
    const unexpected = [...src.keys()].filter((k) => !own.has(k));
    if (strict && (missing.length || unexpected.length)) {
      const parts: string[] = [];
      if (missing.length) parts.push(`missing from the state dict: ${missing.join(', ')}`);
      if (unexpected.length) parts.push(`not in the model: ${unexpected.join(', ')}`);
      throw new StateDictError(missing[0] ?? unexpected[0], parts.join('; '));
    }
    for (const [t, s] of todo) {
      if (s instanceof Tensor) copyInto(t, s);
      else if (t.size) t.write(s.data);
    }
    return { missing, unexpected };
  }

  /** Set training mode on this module and every descendant. */
  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Drop every parameter's gradient (set_to_none, PyTorch's default) or zero it in place. */
  zeroGrad(setToNone = true): void {
    for (const p of this.parameters()) {
      if (!p.grad) continue;
      if (setToNone) {
        p.grad.dispose();
        p.grad = null;
      } else fillInPlace(p.grad, 0);
    }
  }

  /** fn on every descendant, children before parents, then this module (torch's Module.apply). */
  apply(fn: (m: Module) => void): this {
    for (const c of this.children.values()) c.apply(fn);
    fn(this);
    return this;
  }

  /** Free parameters, buffers and their gradients. */
  dispose(): void {
    for (const [, m] of this.namedModules()) {
      for (const t of [...m.params.values(), ...m.buffers.values()]) {
        t.grad?.dispose();
        t.grad = null;
        t.dispose();
      }
    }
  }
}

/** Children named 0, 1, ... (torch.nn.ModuleList). */
export class ModuleList<M extends Module = Module> extends Module {
  private readonly items: M[] = [];
  constructor(items: Iterable<M> = []) {
    super();
    for (const m of items) this.push(m);
  }
  push(m: M): this {
    this.registerModule(String(this.items.length), m);
    this.items.push(m);
    return this;
  }
  at(i: number): M {
    const m = this.items[i];
    if (!m) throw new Error(`ModuleList: index ${i} out of range (length ${this.items.length})`);
    return m;
  }
  get length(): number {
    return this.items.length;
  }
  [Symbol.iterator](): Iterator<M> {
    return this.items[Symbol.iterator]();
  }
}

// ------------------------------------------------------------------------------------------------ layers
/**
 * y = x W^T + b, W [out, in] (PyTorch layout), x [..., in] -> [..., out]. Init as torch.nn.Linear:
 * W, b ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform with a = sqrt(5)); models re-initialise as they need.
 */
export class Linear extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    o: { bias?: boolean } = {},
  ) {
    super();
    const bound = inFeatures > 0 ? 1 / Math.sqrt(inFeatures) : 0;
    this.weight = this.registerParameter('weight', uniform_(Tensor.empty([outFeatures, inFeatures]), -bound, bound)); // [out, in]
    this.bias = (o.bias ?? true) ? this.registerParameter('bias', uniform_(Tensor.empty([outFeatures]), -bound, bound)) : null; // [out]
  }

  forward(x: Tensor): Tensor {
    const inF = this.inFeatures;
    if (x.shape[x.ndim - 1] !== inF) throw new Error(`Linear(${inF}, ${this.outFeatures}): input ${x.describe()} does not end in ${inF}`);
    if (this.bias) return linear(x, this.weight, this.bias); // [..., out], bias fused into the matmul
    const lead: Shape = x.shape.slice(0, -1);
    const x2 = x.ndim === 2 ? x : reshape(x, [-1, inF]); // [N, in]
    const y = matmul(x2, this.weight, { transB: true }); // [N, out]
    return x.ndim === 2 ? y : reshape(y, [...lead, this.outFeatures]); // [..., out]
  }
}

/**
 * weight [num, dim]; forward(ids [...]) -> [..., dim]. Init as torch.nn.Embedding: N(0, 1) with the padding row
 * zeroed; the padding row gets no gradient (kernels/embedding.ts).
 */
export class Embedding extends Module {
  readonly weight: Tensor;
  readonly paddingIdx: number | null;
  constructor(
    readonly numEmbeddings: number,
    readonly embeddingDim: number,
    o: { paddingIdx?: number | null } = {},
  ) {
    super();
    const p = o.paddingIdx ?? null;
    if (p !== null && (!Number.isInteger(p) || p < -numEmbeddings || p >= numEmbeddings)) {
      throw new Error(`Embedding(${numEmbeddings}, ${embeddingDim}): paddingIdx ${p} out of range`);
    }
    this.paddingIdx = p === null ? null : p < 0 ? p + numEmbeddings : p;
    this.weight = this.registerParameter('weight', normal_(Tensor.empty([numEmbeddings, embeddingDim]), 1)); // [V, D]
    if (this.paddingIdx !== null) fillRow_(this.weight, this.paddingIdx, 0);
  }

  forward(ids: Tensor, o: Pick<EmbeddingOptions, 'hostIds'> = {}): Tensor {
    return embedding(this.weight, ids, { paddingIdx: this.paddingIdx, ...o }); // [..., D]
  }
}

/**
 * y = w * (x - mean) / sqrt(var + eps) + b over the last axis (biased variance). eps defaults to 1e-12, the
 * default of S3-Rec's TF-style modules.LayerNorm (torch.nn.LayerNorm's is 1e-5).
 */
export class LayerNorm extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor;
  readonly eps: number;
  constructor(
    readonly dim: number,
    o: { eps?: number } = {},
  ) {
    super();
    this.eps = o.eps ?? 1e-12;
    this.weight = this.registerParameter('weight', ones_(Tensor.empty([dim]))); // [D]
    this.bias = this.registerParameter('bias', zeros_(Tensor.empty([dim]))); // [D]
  }

  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight, this.bias, { eps: this.eps }); // [..., D]
  }
}

/**
 * Inverted dropout (kept values scaled by 1/(1-p); p = 1 drops everything) while training; the identity (no kernel,
 * the same tensor) in eval mode or at p = 0.
 */
export class Dropout extends Module {
  constructor(readonly p: number) {
    super();
    if (!(p >= 0 && p <= 1)) throw new Error(`Dropout: p = ${p} must be in [0, 1]`);
  }

  forward(x: Tensor): Tensor {
    if (!this.training || this.p === 0) return x;
    return dropout(x, { p: this.p, training: true }); // [...x]
  }
}
