// euclid_score (kernels/euclid_score.ts) at AttRec's training shape (B=1000 users, N=3 items, D=150, V=1682
// items), forward + backward into u, m, X, Q (ATTREC_SPEC §2.4-2.5: targets and negatives are scored [B, 3] each):
//   fused     kernels/euclid_score.ts (1 forward dispatch; backward: rows + inverse index + table = 3)
//   composed  the same math from this engine's unfused ops: embedding (gather) x2, sub, square, sum, mul, add;
//             autograd backward (scatter-based embedding grads)
//   tfjs      @tensorflow/tfjs-backend-webgpu composing the same math (gather, sub, square, sum) with
//             tf.valueAndGrads, on the same adapter
// Every run is forward + backward with a fixed upstream gradient; validation checks the scores and all four
// gradients against the float64 reference. The N = 100 rows show the kernel at a longer candidate list.
import { reshape, type Tensor } from '../engine/index.js';
import { add, embedding, euclidScore, mul, refEuclidScore, refEuclidScoreGrad, square, sub, sum } from '../kernels/index.js';
import { engineVariant, f64, rand, randIds, tfjsVariant, type HostTensor } from './common.js';
import type { BenchEntry, BenchSize } from './types.js';

const ALPHA = 0.2;
const TOL = { atol: 1e-4, rtol: 1e-3 };

interface Shape {
  B: number;
  N: number;
  D: number;
  V: number;
}

interface In {
  u: HostTensor;
  m: HostTensor;
  X: HostTensor;
  Q: HostTensor;
  idx: HostTensor;
  gy: HostTensor;
}

/** The same math from unfused engine ops (autograd does the backward). */
function composed({ u, m, X, Q, idx }: Record<string, Tensor>): Tensor {
  const [B, D] = u!.shape as [number, number];
  const lt = sum(square(sub(reshape(u!, [B, 1, D]), embedding(X!, idx!))), -1); // [B, N]
  const st = sum(square(sub(reshape(m!, [B, 1, D]), embedding(Q!, idx!))), -1); // [B, N]
  return add(mul(lt, ALPHA), mul(st, 1 - ALPHA)); // [B, N]
}

function entry(s: Shape): BenchEntry<In> {
  const { B, N, D, V } = s;
  const grads = ['u', 'm', 'X', 'Q'];
  return {
    op: 'euclid_score',
    shape: `B${B} N${N} D${D} V${V}`,
    dims: { ...s },
    flops: 18 * B * N * D, // forward 6 per (b, n, d); backward rows 6, table 6
    bytes: 4 * (6 * B * N * D + 4 * B * D + 2 * V * D + 3 * B * N), // gathered rows 3x, u/m and their grads, table grads
    inputs: () => ({
      u: rand([B, D], 1, -0.1, 0.1),
      m: rand([B, D], 2, -0.1, 0.1),
      X: rand([V, D], 3, -0.1, 0.1),
      Q: rand([V, D], 4, -0.1, 0.1),
      idx: randIds([B, N], 5, 0, V),
      gy: rand([B, N], 6),
    }),
    reference: (h) => {
      const [u, m, X, Q, idx, gy] = [h.u, h.m, h.X, h.Q, h.idx, h.gy].map((x) => f64(x)) as [ReturnType<typeof f64>, ...ReturnType<typeof f64>[]];
      const g = refEuclidScoreGrad(u, m!, X!, Q!, idx!, ALPHA, gy!);
      return { out: refEuclidScore(u, m!, X!, Q!, idx!, ALPHA).data, du: g[0].data, dm: g[1].data, dX: g[2].data, dQ: g[3].data };
    },
    tol: TOL,
    variants: [
      engineVariant('fused', 'fused', { grads, gy: 'gy', forward: ({ u, m, X, Q, idx }) => euclidScore(u!, m!, X!, Q!, idx!, { alpha: ALPHA }) }),
      engineVariant('composed', 'composed', { grads, gy: 'gy', forward: composed }),
      tfjsVariant({
        grads,
        gy: 'gy',
        forward: (tf, { u, m, X, Q, idx }) => {
          const lt = tf.sum(tf.square(tf.sub(tf.expandDims(u!, 1), tf.gather(X!, idx!))), -1); // [B, N]
          const st = tf.sum(tf.square(tf.sub(tf.expandDims(m!, 1), tf.gather(Q!, idx!))), -1); // [B, N]
          return tf.add(tf.mul(lt, ALPHA), tf.mul(st, 1 - ALPHA)); // [B, N]
        },
      }),
    ],
  };
}

export function entries(size: BenchSize): BenchEntry[] {
  if (size === 'tiny') return [entry({ B: 7, N: 3, D: 10, V: 13 })];
  return [entry({ B: 1000, N: 3, D: 150, V: 1682 }), entry({ B: 256, N: 100, D: 150, V: 1682 })];
}
