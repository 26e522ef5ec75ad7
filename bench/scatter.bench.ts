// scatter (kernels/scatter.ts): the deterministic segment sum of rows into a table (what every table gradient
// does: embeddings, candidate rows), at S3-Rec pretraining positions (5000 rows of 64 into 12,103 items, ids
// drawn uniformly, none excluded):
//   fused     scatterAddRows from the ids tensor (GPU radix-built inverse index + segment sum)
//   hostcsr   the same with host ids (inverse index by counting sort on the host + upload)
// Validated against the float64 segment sum (refSegmentSum).
import { Tensor } from '../engine/index.js';
import { refSegmentSum, scatterAddRows } from '../kernels/index.js';
import { engineVariant, f64, rand, randIds, type HostTensor } from './common.js';
import type { BenchEntry, BenchSize } from './types.js';

interface In {
  src: HostTensor;
  ids: HostTensor;
}

function entry(M: number, D: number, V: number): BenchEntry<In> {
  const variant = (host: boolean) =>
    engineVariant<In>(host ? 'hostcsr' : 'fused', host ? 'alt' : 'fused', {
      tensors: (h) => ({ src: Tensor.from(h.src.data, h.src.shape), ids: Tensor.from(h.ids.data, h.ids.shape, 'i32') }),
      forward: ({ src, ids }, h) => scatterAddRows(src!, host ? (h.ids.data as Int32Array) : ids!, V), // [V, D]
    });
  return {
    op: 'scatter',
    shape: `[${M},${D}] rows into V${V}`,
    dims: { M, D, V },
    bytes: 4 * (M * D + V * D + 2 * M + V),
    inputs: () => ({ src: rand([M, D], 1), ids: randIds([M], 2, 0, V) }),
    reference: (h) => ({ out: refSegmentSum(f64(h.src), h.ids.data, V).data }),
    tol: { atol: 1e-5, rtol: 1e-5 },
    variants: [variant(false), variant(true)],
  };
}

export function entries(size: BenchSize): BenchEntry[] {
  return size === 'tiny' ? [entry(40, 6, 13)] : [entry(5000, 64, 12103)];
}
