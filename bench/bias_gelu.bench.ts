// bias_gelu (kernels/bias_gelu.ts): y = gelu(x + b), forward + backward (dx and the bias gradient), at S3-Rec's FFN
// activation (B·L = 12800 rows of 256), against the composed add + gelu (autograd backward: gelu' and sumTo)
// and tfjs (erf-form GELU from tf ops, tf.valueAndGrads).
import { add, biasGelu, gelu, refBiasGelu, refBiasGeluGrad } from '../kernels/index.js';
import { engineVariant, f64, GRAD_TOL, rand, tfjsVariant, type HostTensor } from './common.js';
import type { BenchEntry, BenchSize } from './types.js';

interface In {
  x: HostTensor;
  b: HostTensor;
  gy: HostTensor;
}

function entry(R: number, C: number): BenchEntry<In> {
  const grads = ['x', 'b'];
  return {
    op: 'bias_gelu',
    shape: `[${R},${C}] + [${C}]`,
    dims: { R, C },
    bytes: 4 * (5 * R * C + 2 * C), // forward x, y; backward x, gy, dx; b and db
    inputs: () => ({ x: rand([R, C], 1, -3, 3), b: rand([C], 2), gy: rand([R, C], 3) }),
    reference: (h) => {
      const [dx, db] = refBiasGeluGrad(f64(h.x), f64(h.b), f64(h.gy));
      return { out: refBiasGelu(f64(h.x), f64(h.b)).data, dx: dx.data, db: db.data };
    },
    // db sums R rows: f32 rounding grows ~sqrt(R)·eps·|terms|.
    tol: { out: { atol: 1e-5, rtol: 1e-4 }, dx: GRAD_TOL, db: { atol: 1e-5 * Math.sqrt(R), rtol: 1e-3 } },
    variants: [
      engineVariant('fused', 'fused', { grads, gy: 'gy', forward: ({ x, b }) => biasGelu(x!, b!) }),
      engineVariant('composed', 'composed', { grads, gy: 'gy', forward: ({ x, b }) => gelu(add(x!, b!)) }),
      tfjsVariant({
        grads,
        gy: 'gy',
        forward: (tf, { x, b }) => {
          const z = tf.add(x!, b!); // [R, C]
          return tf.mul(tf.mul(z, 0.5), tf.add(tf.erf(tf.mul(z, Math.SQRT1_2)), 1));
        },
      }),
    ],
  };
}

export function entries(size: BenchSize): BenchEntry[] {
  return size === 'tiny' ? [entry(70, 20)] : [entry(12800, 256)];
}
