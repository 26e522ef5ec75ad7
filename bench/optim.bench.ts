// Optimizer steps over the models' real parameter sets (validated against the float64 references first):
//   S3-Rec (S3REC_SPEC §3): 45 tensors, 935,360 floats, Adam (lr 1e-3)
//   AttRec (ATTREC_SPEC §2.1, ML-100k): P, V [943, 150], Q, X [1683, 150], W [150, 150] = 810,300 floats,
//     TF Adagrad (lr 0.05, initial accumulator 0.05)
// Variants:
//   adam.step / adagrad.step            the fused update as the optimizer runs it by default: a launch of its own
//                                       for each parameter of >= 32768 floats, up to 7 smaller ones per launch,
//                                       one vec4 per thread
//   adam.step_k1 / adagrad.step_k1      one launch per parameter
//   adam.step_k7all                     up to 7 parameters per launch whatever their size
//   adam.step_scalar / adagrad.step_scalar   the default grouping, one float per thread
//   adam.composed                       the same Adam update from unfused elementwise ops (~16 dispatches/param)
// Memory traffic per element: Adam reads p, g, m, v and writes p, m, v (28 B); Adagrad reads p, g, acc, writes
// p, acc (20 B).
import { copyInto, noGrad, ref, scope, Tensor } from '../engine/index.js';
import { add, div, mul, sqrt, sub } from '../kernels/elementwise.js';
import { Adagrad, Adam, refAdagradStep, refAdamStep, type Optimizer, type OptimizerOptions } from '../models/optim.js';
import type { BenchCase, BenchInstance } from './types.js';

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

function hostData(n: Named, seed: number, scale: number): Float32Array[] {
  const rnd = ref.mulberry32(seed);
  return n.map(([, s]) => Float32Array.from({ length: numel(s) }, () => (rnd() * 2 - 1) * scale));
}

interface Params {
  params: Tensor[];
  init: Float32Array[];
  grads: Float32Array[];
  setGrads(): void;
  dispose(): void;
}

function makeParams(n: Named): Params {
  const init = hostData(n, 1, 0.1);
  const grads = hostData(n, 2, 1);
  const params = init.map((v, i) => Tensor.from(v, n[i]![1]).requireGrad()); // [...shape]
  return {
    params,
    init,
    grads,
    setGrads() {
      params.forEach((p, i) => {
        p.grad?.dispose();
        p.grad = Tensor.from(grads[i]!, p.shape); // [...shape]
      });
    },
    dispose() {
      for (const p of params) {
        p.grad?.dispose();
        p.dispose();
      }
    },
  };
}

async function checkAgainst(name: string, params: Tensor[], want: Float64Array[]): Promise<void> {
  for (const [i, p] of params.entries()) {
    const got = await p.toArray();
    const w = want[i]!;
    for (let j = 0; j < w.length; j++) {
      if (!(Math.abs(got[j]! - w[j]!) <= 1e-5 + 1e-4 * Math.abs(w[j]!))) throw new Error(`${name}: param ${i} [${j}] got ${got[j]}, want ${w[j]}`);
    }
  }
}

const ADAM_H = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 };
const ADAGRAD_H = { lr: 0.05, eps: 0, weightDecay: 0, init: 0.05 };

function stepCase(kind: 'adam' | 'adagrad', variant: '' | 'k1' | 'k7all' | 'scalar'): BenchCase {
  const shapes = kind === 'adam' ? s3recShapes() : attrecShapes();
  const n = total(shapes);
  const grouping: OptimizerOptions = variant === 'k1' ? { slotsPerLaunch: 1 } : variant === 'k7all' ? { slotsPerLaunch: 7, packBelow: Infinity } : {};
  const vec4 = variant !== 'scalar';
  return {
    name: `${kind}.step${variant ? `_${variant}` : ''}`,
    shape: `${kind === 'adam' ? 'S3-Rec' : 'AttRec'} ${shapes.length} tensors, ${n} floats`,
    bytes: (kind === 'adam' ? 28 : 20) * n,
    setup(): BenchInstance {
      const ps = makeParams(shapes);
      const named = ps.params.map((p, i) => [shapes[i]![0], p] as const);
      const opt: Optimizer =
        kind === 'adam'
          ? new Adam(named, { lr: ADAM_H.lr, ...grouping, vec4 })
          : new Adagrad(named, { lr: ADAGRAD_H.lr, initialAccumulatorValue: ADAGRAD_H.init, ...grouping, vec4 });
      ps.setGrads();
      return {
        run: () => opt.step(),
        async validate() {
          ps.params.forEach((p, i) => p.write(ps.init[i]!));
          opt.loadStateDict({ kind, hyper: opt.hyper(), steps: {}, tensors: new Map() }); // fresh state
          const want = ps.init.map((v) => Float64Array.from(v));
          const s1 = want.map((w) => new Float64Array(w.length).fill(kind === 'adam' ? 0 : ADAGRAD_H.init));
          const s2 = want.map((w) => new Float64Array(w.length));
          for (let t = 1; t <= 2; t++) {
            opt.step();
            want.forEach((w, i) => (kind === 'adam' ? refAdamStep(w, ps.grads[i]!, s1[i]!, s2[i]!, t, ADAM_H) : refAdagradStep(w, ps.grads[i]!, s1[i]!, ADAGRAD_H)));
          }
          await checkAgainst(`${kind}.step`, ps.params, want);
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
function adamComposed(): BenchCase {
  const shapes = s3recShapes();
  const n = total(shapes);
  return {
    name: 'adam.composed',
    shape: `S3-Rec ${shapes.length} tensors, ${n} floats`,
    bytes: 28 * n,
    setup(): BenchInstance {
      const ps = makeParams(shapes);
      ps.setGrads();
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
        async validate() {
          t = 0;
          ps.params.forEach((p, i) => {
            p.write(ps.init[i]!);
            m[i]!.write(new Float32Array(p.size));
            v[i]!.write(new Float32Array(p.size));
          });
          const want = ps.init.map((x) => Float64Array.from(x));
          const s1 = want.map((w) => new Float64Array(w.length));
          const s2 = want.map((w) => new Float64Array(w.length));
          for (let k = 1; k <= 2; k++) {
            run();
            want.forEach((w, i) => refAdamStep(w, ps.grads[i]!, s1[i]!, s2[i]!, k, ADAM_H));
          }
          await checkAgainst('adam.composed', ps.params, want);
        },
        dispose() {
          for (const x of [...m, ...v]) x.dispose();
          ps.dispose();
        },
      };
    },
  };
}

export const cases: BenchCase[] = [
  stepCase('adam', ''),
  stepCase('adam', 'k1'),
  stepCase('adam', 'k7all'),
  stepCase('adam', 'scalar'),
  adamComposed(),
  stepCase('adagrad', ''),
  stepCase('adagrad', 'k1'),
  stepCase('adagrad', 'scalar'),
];
