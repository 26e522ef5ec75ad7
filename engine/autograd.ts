// Reverse-mode autograd. An op is an object {name, forward, backward}; applying it records a GraphNode on the
// output while any input requires grad. The graph is the tape: backward() sorts it topologically (micrograd's
// build_topo), walks it in reverse, asserts every gradient's shape, accumulates, and frees each node's saved
// tensors as soon as the node is done.
import { accumulateInPlace, addSame, ones } from './builtins.js';
import { checkFinite } from './checks.js';
import { flags } from './env.js';
import { sameShape, shapeStr, Tensor, untracked, type Shape } from './tensor.js';

export class BackwardNotSupported extends Error {
  constructor(op: string, detail = '') {
    super(`BackwardNotSupported: op '${op}' has no backward${detail ? ` (${detail})` : ''}`);
    this.name = 'BackwardNotSupported';
  }
}

export interface OpContext<A> {
  readonly name: string;
  readonly attrs: A;
  /** needsGrad[i]: input i requires a gradient (grad mode on and the input requires grad). */
  readonly needsGrad: readonly boolean[];
  /** True when a node is recorded, i.e. some input needs a gradient. Forward may skip saving otherwise. */
  readonly recording: boolean;
  /** Keep tensors for backward (no-op when not recording). The node holds its own reference. */
  save(...ts: Tensor[]): void;
  readonly saved: readonly Tensor[];
  /** Non-tensor values for backward (shapes, scalars). */
  readonly extra: Record<string, unknown>;
}

export interface OpDef<A> {
  name: string;
  forward(ctx: OpContext<A>, inputs: readonly Tensor[], attrs: A): Tensor;
  /** Gradients for each input, given the output's gradient; null where ctx.needsGrad[i] is false. */
  backward?(ctx: OpContext<A>, gy: Tensor): Array<Tensor | null>;
}

export interface Op<A> {
  readonly name: string;
  readonly def: OpDef<A>;
  apply(inputs: readonly Tensor[], attrs: A): Tensor;
}

class Ctx<A> implements OpContext<A> {
  saved: Tensor[] = [];
  extra: Record<string, unknown> = {};
  constructor(
    readonly name: string,
    readonly attrs: A,
    readonly needsGrad: readonly boolean[],
    readonly recording: boolean,
  ) {}
  save(...ts: Tensor[]): void {
    if (!this.recording) return;
    // Saved tensors are views (own reference to the storage), outside every scope.
    untracked(() => {
      for (const t of ts) {
        const v = t.detach();
        v.name = t.name;
        this.saved.push(v);
      }
    });
  }
  release(): void {
    for (const t of this.saved) t.dispose();
    this.saved = [];
  }
}

export interface GraphNode {
  readonly op: OpDef<unknown>;
  readonly inputs: readonly Tensor[];
  readonly ctx: Ctx<unknown>;
}

let gradEnabled = true;
let opCalls = 0;

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Run fn with gradient recording off (evaluation, optimizer updates). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    const r = fn();
    if (r instanceof Promise) {
      return r.finally(() => {
        gradEnabled = prev;
      }) as T;
    }
    gradEnabled = prev;
    return r;
  } catch (e) {
    gradEnabled = prev;
    throw e;
  }
}

export function defineOp<A = Record<string, never>>(def: OpDef<A>): Op<A> {
  return {
    name: def.name,
    def,
    apply(inputs: readonly Tensor[], attrs: A): Tensor {
      for (const [i, x] of inputs.entries()) {
        if (x.disposed) throw new Error(`${def.name}: input ${i} is a disposed tensor`);
      }
      const needsGrad = inputs.map((x) => gradEnabled && x.requiresGrad);
      const recording = needsGrad.some(Boolean);
      const ctx = new Ctx<A>(def.name, attrs, needsGrad, recording);
      const out = def.forward(ctx, inputs, attrs);
      if (flags.checkFinite && out.dtype === 'f32') checkFinite({ output: out }, `op ${def.name} (call #${++opCalls})`);
      if (recording) {
        out.requiresGrad = true;
        out.node = { op: def as OpDef<unknown>, inputs: [...inputs], ctx: ctx as Ctx<unknown> };
      }
      return out;
    },
  };
}

/** Every node reachable from root, inputs before outputs. */
function topo(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  const stack: Array<[Tensor, boolean]> = [[root, false]];
  while (stack.length) {
    const [t, done] = stack.pop()!;
    if (done) {
      order.push(t);
      continue;
    }
    if (seen.has(t) || !t.node) continue;
    seen.add(t);
    stack.push([t, true]);
    for (const x of t.node.inputs) if (x.node && !seen.has(x)) stack.push([x, false]);
  }
  return order;
}

/** Free the saved tensors of every node reachable from root without running backward. */
export function freeGraph(root: Tensor): void {
  for (const t of topo(root)) {
    t.node!.ctx.release();
    t.node = null;
  }
}

function assertGradShape(op: string, i: number, g: Tensor, shape: Shape): void {
  if (!sameShape(g.shape, shape)) {
    throw new Error(`${op}: backward returned a gradient of shape ${shapeStr(g.shape)} for input ${i} of shape ${shapeStr(shape)}`);
  }
}

/**
 * Accumulate gradients of root into every leaf tensor with requiresGrad (`leaf.grad`). root must be a scalar
 * unless gradOutput is given. The graph is freed afterwards (no retain_graph).
 */
export function backward(root: Tensor, gradOutput?: Tensor): void {
  if (!gradOutput && root.size !== 1) throw new Error(`backward: ${root.describe()} is not a scalar; pass gradOutput`);
  if (gradOutput && !sameShape(gradOutput.shape, root.shape)) throw new Error(`backward: gradOutput ${gradOutput.describe()} does not match ${root.describe()}`);
  if (!root.requiresGrad) throw new Error(`backward: ${root.describe()} does not require grad (no input of its graph has requiresGrad, or it ran under noGrad)`);
  untracked(() => {
    const seed = gradOutput ? gradOutput.detach() : ones(root.shape);
    if (!root.node) {
      setLeafGrad(root, seed);
      return;
    }
    const order = topo(root);
    const grads = new Map<Tensor, Tensor>([[root, seed]]);
    for (let k = order.length - 1; k >= 0; k--) {
      const t = order[k]!;
      const node = t.node!;
      const gy = grads.get(t);
      grads.delete(t);
      try {
        if (!gy) continue;
        if (!node.op.backward) throw new BackwardNotSupported(node.op.name);
        const gin = node.op.backward(node.ctx, gy);
        if (flags.checkFinite) {
          const gs: Record<string, Tensor> = {};
          gin.forEach((g, i) => {
            if (g && !g.disposed && g.dtype === 'f32') gs[`grad[${i}]`] = g;
          });
          checkFinite(gs, `op ${node.op.name}.backward`);
        }
        if (gin.length !== node.inputs.length) throw new Error(`${node.op.name}: backward returned ${gin.length} gradients for ${node.inputs.length} inputs`);
        const seen = new Set<Tensor>();
        for (let i = 0; i < gin.length; i++) {
          let g = gin[i] ?? null;
          const x = node.inputs[i]!;
          if (!node.ctx.needsGrad[i]) {
            if (g && g !== gy && !seen.has(g)) g.dispose();
            continue;
          }
          if (!g) throw new Error(`${node.op.name}: backward returned no gradient for input ${i}, which needs one`);
          assertGradShape(node.op.name, i, g, x.shape);
          // A gradient that is gy itself or repeats another input's becomes its own reference.
          if (g === gy || seen.has(g)) g = g.detach();
          seen.add(g);
          if (x.node) {
            const prev = grads.get(x);
            grads.set(x, prev ? accumulate(prev, g) : g);
          } else if (x.requiresGrad) setLeafGrad(x, g);
          else g.dispose();
        }
      } finally {
        gy?.dispose();
        node.ctx.release();
        t.node = null;
      }
    }
    for (const g of grads.values()) g.dispose();
  });
}

function accumulate(prev: Tensor, g: Tensor): Tensor {
  if (prev._storage.refs === 1) {
    accumulateInPlace(prev, g);
    g.dispose();
    return prev;
  }
  const s = addSame(prev, g);
  prev.dispose();
  g.dispose();
  return s;
}

function setLeafGrad(x: Tensor, g: Tensor): void {
  if (!sameShape(g.shape, x.shape)) throw new Error(`backward: gradient ${g.describe()} for leaf ${x.describe()}`);
  x.grad = x.grad && !x.grad.disposed ? accumulate(x.grad, g) : g;
}

// ------------------------------------------------------------------ reshape: the one op the engine owns
const reshapeOp = defineOp<{ shape: Shape }>({
  name: 'reshape',
  forward(ctx, [x], { shape }) {
    ctx.extra.inShape = x!.shape;
    return x!.view(shape);
  },
  backward(ctx, gy) {
    return [gy.view(ctx.extra.inShape as Shape)];
  },
});

/** A view with another shape (one dimension may be -1); gradients flow back through it. */
export function reshape(x: Tensor, shape: Shape): Tensor {
  return reshapeOp.apply([x], { shape });
}
