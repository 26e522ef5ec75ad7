// elementwise (kernels/elementwise.ts): the table-driven unary and broadcast binary ops, forward + backward, at
// S3-Rec shapes: GELU over the FFN activation [12800, 256], and a bias add [12800, 64] + [64] (its backward sums
// the bias gradient over the rows). The op is the primitive here: no composition, the tfjs peer beside it.
import { add, gelu, refBinary, refBinaryGrad, refUnary, refUnaryGrad } from '../kernels/index.js';
import { engineVariant, f64, GRAD_TOL, rand, tfjsVariant, type HostTensor } from './common.js';
import type { BenchEntry, BenchSize } from './types.js';

interface In {
  x: HostTensor;
  b: HostTensor;
  gy: HostTensor;
}

function geluEntry(R: number, C: number): BenchEntry<In> {
  return {
    op: 'elementwise',
    name: 'elementwise.gelu',
    shape: `[${R},${C}]`,
    dims: { R, C },
    bytes: 4 * 4 * R * C,
    inputs: () => ({ x: rand([R, C], 1, -3, 3), b: rand([1], 2), gy: rand([R, C], 3) }),
    reference: (h) => ({ out: refUnary('gelu', f64(h.x)).data, dx: refUnaryGrad('gelu', f64(h.x), f64(h.gy)).data }),
    tol: { out: { atol: 1e-5, rtol: 1e-4 }, dx: GRAD_TOL },
    variants: [
      engineVariant('fused', 'fused', { grads: ['x'], gy: 'gy', forward: ({ x }) => gelu(x!) }),
      tfjsVariant({
        grads: ['x'],
        gy: 'gy',
        forward: (tf, { x }) => tf.mul(tf.mul(x!, 0.5), tf.add(tf.erf(tf.mul(x!, Math.SQRT1_2)), 1)),
      }),
    ],
  };
}

function addEntry(R: number, C: number): BenchEntry<In> {
  return {
    op: 'elementwise',
    name: 'elementwise.add_bias',
    shape: `[${R},${C}] + [${C}]`,
    dims: { R, C },
    bytes: 4 * (4 * R * C + 2 * C),
    inputs: () => ({ x: rand([R, C], 1), b: rand([C], 2), gy: rand([R, C], 3) }),
    reference: (h) => {
      const [dx, db] = refBinaryGrad('add', f64(h.x), f64(h.b), f64(h.gy));
      return { out: refBinary('add', f64(h.x), f64(h.b)).data, dx: dx.data, db: db!.data };
    },
    tol: { out: { atol: 1e-6, rtol: 1e-6 }, dx: GRAD_TOL, db: { atol: 1e-5 * Math.sqrt(R), rtol: 1e-4 } },
    variants: [
      engineVariant('fused', 'fused', { grads: ['x', 'b'], gy: 'gy', forward: ({ x, b }) => add(x!, b!) }),
      tfjsVariant({ grads: ['x', 'b'], gy: 'gy', forward: (tf, { x, b }) => tf.add(x!, b!) }),
    ],
  };
}

export function entries(size: BenchSize): BenchEntry[] {
  return size === 'tiny' ? [geluEntry(11, 9), addEntry(11, 9)] : [geluEntry(12800, 256), addEntry(12800, 64)];
}
