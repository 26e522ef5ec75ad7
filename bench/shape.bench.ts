// shape (kernels/shape.ts): data movement at S3-Rec shapes, forward only, exact:
//   shape.permute      the attention head split [256, 50, 2, 32] -> [0, 2, 1, 3] (vec4 runs), vs tf.transpose
//   shape.gather_rows  candidate rows of the item table: 12800 ids into [12103, 64], vs tf.gather
import { Tensor } from '../engine/index.js';
import { gatherRows, permute, refIndexSelect, refPermute } from '../kernels/index.js';
import { engineVariant, f64, rand, randIds, tfjsVariant, type HostTensor } from './common.js';
import type { BenchEntry, BenchSize } from './types.js';

const EXACT = { atol: 0, rtol: 0 };

function permuteEntry(dims: number[], perm: number[]): BenchEntry<{ x: HostTensor }> {
  const n = dims.reduce((a, b) => a * b, 1);
  return {
    op: 'shape',
    name: 'shape.permute',
    shape: `[${dims.join(',')}] by [${perm.join(',')}]`,
    dims: Object.fromEntries(dims.map((d, i) => [`d${i}`, d])),
    bytes: 8 * n,
    inputs: () => ({ x: rand(dims, 1) }),
    reference: (h) => ({ out: refPermute(f64(h.x), perm).data }),
    tol: EXACT,
    variants: [
      engineVariant('fused', 'fused', { forward: ({ x }) => permute(x!, perm) }),
      tfjsVariant({ forward: (tf, { x }) => tf.transpose(x!, perm) }),
    ],
  };
}

function gatherEntry(N: number, V: number, D: number): BenchEntry<{ table: HostTensor; ids: HostTensor }> {
  return {
    op: 'shape',
    name: 'shape.gather_rows',
    shape: `${N} ids into [${V},${D}]`,
    dims: { N, V, D },
    bytes: 4 * (2 * N * D + N),
    inputs: () => ({ table: rand([V, D], 1), ids: randIds([N], 2, 0, V) }),
    reference: (h) => ({ out: refIndexSelect(f64(h.table), 0, f64(h.ids)).data }),
    tol: EXACT,
    variants: [
      engineVariant('fused', 'fused', {
        tensors: (h) => ({ table: Tensor.from(h.table.data, h.table.shape), ids: Tensor.from(h.ids.data, h.ids.shape, 'i32') }),
        forward: ({ table, ids }) => gatherRows(table!, ids!), // [N, D]
      }),
      tfjsVariant({ forward: (tf, { table, ids }) => tf.gather(table!, ids!) }),
    ],
  };
}

export function entries(size: BenchSize): BenchEntry[] {
  return size === 'tiny'
    ? [permuteEntry([3, 5, 2, 4], [0, 2, 1, 3]), gatherEntry(17, 11, 6)]
    : [permuteEntry([256, 50, 2, 32], [0, 2, 1, 3]), gatherEntry(12800, 12103, 64)];
}
