// dropout (kernels/dropout.ts): inverted dropout, forward + backward (the backward recomputes the mask from its
// seed), at S3-Rec's hidden dropout ([B·L, 64] = [12800, 64], p 0.5) and attention-probability dropout
// ([B·H·L, L] = [25600, 50]). composed: multiply by a precomputed scaled mask (what a framework without an
// in-kernel RNG does once it has the mask). Validated against refDropout with the same seed and offset.
import { Tensor } from '../engine/index.js';
import { dropout, mul, refDropout, refDropoutMask } from '../kernels/index.js';
import { engineVariant, f64, rand, uploadAll, type HostTensor } from './common.js';
import type { BenchEntry, BenchSize } from './types.js';

const P = 0.5;
const DROP = { seed: 99, offset: 7 };

interface In {
  x: HostTensor;
  gy: HostTensor;
}

function entry(R: number, C: number): BenchEntry<In> {
  return {
    op: 'dropout',
    shape: `[${R},${C}] p${P}`,
    dims: { R, C },
    bytes: 4 * 4 * R * C, // x, y, gy, dx
    inputs: () => ({ x: rand([R, C], 1), gy: rand([R, C], 2) }),
    reference: (h) => ({ out: refDropout(f64(h.x), P, DROP.seed, DROP.offset).data, dx: refDropout(f64(h.gy), P, DROP.seed, DROP.offset).data }),
    tol: { atol: 0, rtol: 1e-7 },
    variants: [
      engineVariant('fused', 'fused', { grads: ['x'], gy: 'gy', forward: ({ x }) => dropout(x!, { p: P, ...DROP }) }),
      engineVariant<In>('composed', 'composed', {
        tensors: (h) => {
          const keep = refDropoutMask(R * C, P, DROP.seed, DROP.offset);
          return { ...uploadAll(h), m: Tensor.from(Float32Array.from(keep, (k) => k / (1 - P)), [R, C]) };
        },
        grads: ['x'],
        gy: 'gy',
        forward: ({ x, m }) => mul(x!, m!),
      }),
    ],
  };
}

export function entries(size: BenchSize): BenchEntry[] {
  return size === 'tiny' ? [entry(13, 7)] : [entry(12800, 64), entry(25600, 50)];
}
