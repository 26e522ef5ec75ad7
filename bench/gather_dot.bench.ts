// gather_dot (kernels/gather_dot.ts): scores of each query row against its own candidate rows without
// materialising them, at S3-Rec's sampled evaluation (256 users x 100 candidates x 64, 12,103 items), forward
// only (inference), against embedding + mul + sum from engine ops and tfjs (gather, mul, sum).
import { reshape, type Tensor } from '../engine/index.js';
import { embedding, gatherDot, mul, refGatherDot, sum } from '../kernels/index.js';
import { engineVariant, f64, rand, randIds, tfjsVariant, type HostTensor } from './common.js';
import type { BenchEntry, BenchSize } from './types.js';

interface In {
  h: HostTensor;
  table: HostTensor;
  ids: HostTensor;
}

function entry(B: number, N: number, D: number, V: number): BenchEntry<In> {
  return {
    op: 'gather_dot',
    shape: `B${B} N${N} D${D} V${V}`,
    dims: { B, N, D, V },
    flops: 2 * B * N * D,
    bytes: 4 * (B * N * D + B * D + 2 * B * N), // gathered rows, queries, ids, scores
    inputs: () => ({ h: rand([B, D], 1), table: rand([V, D], 2, -0.1, 0.1), ids: randIds([B, N], 3, 1, V) }),
    reference: (x) => ({ out: refGatherDot(f64(x.h), f64(x.table), f64(x.ids)).data }),
    tol: { atol: 1e-5 * Math.sqrt(D), rtol: 1e-4 },
    variants: [
      engineVariant('fused', 'fused', { forward: ({ h, table, ids }) => gatherDot(h!, table!, ids!) }),
      engineVariant('composed', 'composed', {
        forward: ({ h, table, ids }): Tensor => sum(mul(reshape(h!, [B, 1, D]), embedding(table!, ids!)), -1), // [B, N]
      }),
      tfjsVariant({ forward: (tf, { h, table, ids }) => tf.sum(tf.mul(tf.expandDims(h!, 1), tf.gather(table!, ids!)), -1) }),
    ],
  };
}

export function entries(size: BenchSize): BenchEntry[] {
  return size === 'tiny' ? [entry(5, 7, 6, 30)] : [entry(256, 100, 64, 12103)];
}
