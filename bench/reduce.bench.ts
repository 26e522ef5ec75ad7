// reduce (kernels/reduce.ts): sum, forward + backward (a broadcast), over the rows of [12800, 64] (a bias
// gradient: 12800 terms per output) and over the last axis of [12800, 256] (per-row sums), against tfjs.
import { refSum, refSumGrad, sum } from '../kernels/index.js';
import { engineVariant, f64, GRAD_TOL, rand, tfjsVariant, type HostTensor } from './common.js';
import type { BenchEntry, BenchSize } from './types.js';

interface In {
  x: HostTensor;
  gy: HostTensor;
}

function entry(R: number, C: number, axis: 0 | -1): BenchEntry<In> {
  const n = axis === 0 ? R : C; // terms per output
  const outShape = axis === 0 ? [C] : [R];
  return {
    op: 'reduce',
    name: 'reduce.sum',
    shape: `[${R},${C}] axis ${axis}`,
    dims: { R, C },
    bytes: 4 * 2 * (R * C + outShape[0]!),
    inputs: () => ({ x: rand([R, C], 1), gy: rand(outShape, 2) }),
    reference: (h) => ({ out: refSum(f64(h.x), axis).data, dx: refSumGrad(f64(h.x), axis, f64(h.gy)).data }),
    tol: { out: { atol: 1e-5 * Math.sqrt(n), rtol: 1e-4 }, dx: GRAD_TOL },
    variants: [
      engineVariant('fused', 'fused', { grads: ['x'], gy: 'gy', forward: ({ x }) => sum(x!, axis) }),
      tfjsVariant({ grads: ['x'], gy: 'gy', forward: (tf, { x }) => tf.sum(x!, axis) }),
    ],
  };
}

export function entries(size: BenchSize): BenchEntry[] {
  return size === 'tiny' ? [entry(37, 9, 0), entry(9, 37, -1)] : [entry(12800, 64, 0), entry(12800, 256, -1)];
}
