// optim: the optimizer steps over the models' real parameter sets, validated (two steps from a fresh state)
// against the float64 references first:
//   optim.adam     S3-Rec (S3REC_SPEC §3): 45 tensors, 935,360 floats, Adam (lr 1e-3)
//   optim.adagrad  AttRec (ATTREC_SPEC §2.1, ML-100k): P, V [943, 150], Q, X [1683, 150], W [150, 150] = 810,300
//                  floats, TF Adagrad (lr 0.05, initial accumulator 0.05)
// Variants:
//   step           the fused update as the optimizer runs it by default: a launch of its own for each parameter
//                  of >= 32768 floats, up to 7 smaller ones per launch, one vec4 per thread
//   step_k1        one launch per parameter
//   step_k7all     up to 7 parameters per launch whatever their size (Adam)
//   step_scalar    the default grouping, one float per thread
//   composed       the same Adam update from unfused elementwise ops (~16 dispatches per parameter)
// Memory traffic per element: Adam reads p, g, m, v and writes p, m, v (28 B); Adagrad reads p, g, acc, writes
// p, acc (20 B).
import { copyInto, noGrad, ref, scope, Tensor } from '../engine/index.js';
import { add, div, mul, sqrt, sub } from '../kernels/index.js';
import { refAdagrad, refAdam } from '../kernels/optim.js';
import { Adagrad, Adam, type Optimizer, type OptimizerOptions } from '../models/index.js';
import type { BenchEntry, BenchSize, Instance, Variant } from './types.js';

type Named = Array<[string, number[]]>;

/** The S3-Rec state dict's shapes (Beauty: 12,103 items, 638 attributes). */
export function s3recShapes(items = 12103, attrs = 638, H = 64, L = 50): Named {
  const out: Named = [
    ['item_embeddings.weight', [items, H]],
    ['attribute_embeddings.weight', [attrs, H]],
    ['position_embeddings.weight', [L, H]],
    ['LayerNorm.weight', [H]],
    ['LayerNorm.bias', [H]],
  ];
  for (let l = 0; l < 2; l++) {
    const p = `item_encoder.layer.${l}`;
    for (const n of ['query', 'key', 'value', 'dense']) out.push([`${p}.attention.${n}.weight`, [H, H]], [`${p}.attention.${n}.bias`, [H]]);
    out.push([`${p}.attention.LayerNorm.weight`, [H]], [`${p}.attention.LayerNorm.bias`, [H]]);
    out.push([`${p}.intermediate.dense_1.weight`, [4 * H, H]], [`${p}.intermediate.dense_1.bias`, [4 * H]]);
    out.push([`${p}.intermediate.dense_2.weight`, [H, 4 * H]], [`${p}.intermediate.dense_2.bias`, [H]]);
    out.push([`${p}.intermediate.LayerNorm.weight`, [H]], [`${p}.intermediate.LayerNorm.bias`, [H]]);
  }
  for (const n of ['aap_norm', 'mip_norm', 'map_norm', 'sp_norm']) out.push([`${n}.weight`, [H, H]], [`${n}.bias`, [H]]);
  return out;
}

export function attrecShapes(users = 943, items = 1683, d = 150): Named {
  return [['P', [users, d]], ['V', [users, d]], ['Q', [items, d]], ['X', [items, d]], ['W', [d, d]]];
}

const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);
const total = (n: Named): number => n.reduce((a, [, s]) => a + numel(s), 0);
if (total(s3recShapes()) !== 935_360) throw new Error('optim.bench: the S3-Rec parameter set must hold 935,360 floats');

const ADAM_H = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 };
const ADAGRAD_H = { lr: 0.05, eps: 0, weightDecay: 0, init: 0.05 };
type Kind = 'adam' | 'adagrad';

interface In {
  shapes: Named;
  init: Float32Array[];
  grads: Float32Array[];
}

function hostData(n: Named, seed: number, scale: number): Float32Array[] {
  const rnd = ref.mulberry32(seed);
  return n.map(([, s]) => Float32Array.from({ length: numel(s) }, () => (rnd() * 2 - 1) * scale));
}

const concat = (parts: ArrayLike<number>[]): Float64Array => {
  const out = new Float64Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(Array.from(p), o);
    o += p.length;
  }
  return out;
};

/** Every parameter after two steps from the initial values with a fresh state (float64). */
function reference(kind: Kind, h: In): { params: Float64Array } {
  const want = h.init.map((v) => Float64Array.from(v));
  const s1 = want.map((w) => new Float64Array(w.length).fill(kind === 'adam' ? 0 : ADAGRAD_H.init));
  const s2 = want.map((w) => new Float64Array(w.length));
  for (let t = 1; t <= 2; t++) {
    want.forEach((w, i) => (kind === 'adam' ? refAdam(w, h.grads[i]!, s1[i]!, s2[i]!, t, ADAM_H) : refAdagrad(w, h.grads[i]!, s1[i]!, ADAGRAD_H)));
  }
  return { params: concat(want) };
}

/** Parameters (requiring grad) holding the initial values, their fixed gradients attached. */
function makeParams(h: In): { params: Tensor[]; reset(): void; dispose(): void } {
  const params = h.init.map((v, i) => Tensor.from(v, h.shapes[i]![1]).requireGrad()); // [...shape]
  params.forEach((p, i) => (p.grad = Tensor.from(h.grads[i]!, p.shape))); // [...shape]
  return {
    params,
    reset: () => params.forEach((p, i) => p.write(h.init[i]!)),
    dispose() {
      for (const p of params) {
        p.grad?.dispose();
        p.dispose();
      }
    },
  };
}

const readAll = async (ts: Tensor[]): Promise<Float64Array> => concat(await Promise.all(ts.map((t) => t.toArray())));

function stepVariant(kind: Kind, variant: '' | 'k1' | 'k7all' | 'scalar'): Variant<In> {
  const grouping: OptimizerOptions = variant === 'k1' ? { slotsPerLaunch: 1 } : variant === 'k7all' ? { slotsPerLaunch: 7, packBelow: Infinity } : {};
  const vec4 = variant !== 'scalar';
  return {
    name: `step${variant ? `_${variant}` : ''}`,
    kind: variant ? 'alt' : 'fused',
    setup(h): Instance {
      const ps = makeParams(h);
      const named = ps.params.map((p, i) => [h.shapes[i]![0], p] as const);
      const opt: Optimizer =
        kind === 'adam'
          ? new Adam(named, { lr: ADAM_H.lr, ...grouping, vec4 })
          : new Adagrad(named, { lr: ADAGRAD_H.lr, initialAccumulatorValue: ADAGRAD_H.init, ...grouping, vec4 });
      return {
        run: () => opt.step(),
        async outputs() {
          ps.reset();
          opt.loadStateDict({ kind, hyper: opt.hyper(), steps: {}, tensors: new Map() }); // fresh state
          opt.step();
          opt.step();
          return { params: await readAll(ps.params) };
        },
        dispose() {
          opt.dispose();
          ps.dispose();
        },
      };
    },
  };
}

/** Adam from elementwise ops: what the fused kernel saves (dispatches, intermediate buffers). */
const adamComposed: Variant<In> = {
  name: 'composed',
  kind: 'composed',
  setup(h): Instance {
    const ps = makeParams(h);
    const m = ps.params.map((p) => Tensor.from(new Float32Array(p.size), p.shape)); // [...shape]
    const v = ps.params.map((p) => Tensor.from(new Float32Array(p.size), p.shape)); // [...shape]
    let t = 0;
    const { lr, beta1: b1, beta2: b2, eps } = ADAM_H;
    const run = (): void => {
      t++;
      const stepSize = lr / (1 - b1 ** t);
      const bc2 = Math.sqrt(1 - b2 ** t);
      noGrad(() =>
        scope(() => {
          ps.params.forEach((p, i) => {
            const g = p.grad!;
            const m1 = add(mul(m[i]!, b1), mul(g, 1 - b1)); // [...shape]
            const v1 = add(mul(v[i]!, b2), mul(mul(g, g), 1 - b2)); // [...shape]
            const denom = add(div(sqrt(v1), bc2), eps); // [...shape]
            const p1 = sub(p, mul(div(m1, denom), stepSize)); // [...shape]
            copyInto(m[i]!, m1);
            copyInto(v[i]!, v1);
            copyInto(p, p1);
          });
        }),
      );
    };
    return {
      run,
      async outputs() {
        t = 0;
        ps.reset();
        for (const x of [...m, ...v]) x.write(new Float32Array(x.size));
        run();
        run();
        return { params: await readAll(ps.params) };
      },
      dispose() {
        for (const x of [...m, ...v]) x.dispose();
        ps.dispose();
      },
    };
  },
};

function entry(kind: Kind, shapes: Named, tag: string): BenchEntry<In> {
  const n = total(shapes);
  return {
    op: 'optim',
    name: `optim.${kind}`,
    shape: `${tag} ${shapes.length} tensors, ${n} floats`,
    dims: { tensors: shapes.length, floats: n },
    bytes: (kind === 'adam' ? 28 : 20) * n,
    inputs: () => ({ shapes, init: hostData(shapes, 1, 0.1), grads: hostData(shapes, 2, 1) }),
    reference: (h) => reference(kind, h),
    tol: { atol: 1e-5, rtol: 1e-4 },
    variants:
      kind === 'adam'
        ? [stepVariant('adam', ''), stepVariant('adam', 'k1'), stepVariant('adam', 'k7all'), stepVariant('adam', 'scalar'), adamComposed]
        : [stepVariant('adagrad', ''), stepVariant('adagrad', 'k1'), stepVariant('adagrad', 'scalar')],
  };
}

export function entries(size: BenchSize): BenchEntry[] {
  const tiny = size === 'tiny';
  return [
    entry('adam', tiny ? s3recShapes(20, 7, 8, 5) : s3recShapes(), 'S3-Rec'),
    entry('adagrad', tiny ? attrecShapes(6, 9, 10) : attrecShapes(), 'AttRec'),
  ];
}
