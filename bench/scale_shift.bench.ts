// bench/scale_shift.bench.ts — the README's example bench entry: forward + backward of kernels/scale_shift.ts
// against the same math from elementwise ops and tfjs. The runner validates every variant against the
// reference, then times them side by side.
import { add, mul, refScaleShift, scaleShiftOp } from '../kernels/index.js';
import { engineVariant, f64, rand, tfjsVariant, type HostTensor } from './common.js';
import type { BenchEntry, BenchSize } from './types.js';

export function entries(size: BenchSize): BenchEntry<{ x: HostTensor; gy: HostTensor }>[] {
  return (size === 'tiny' ? [1000] : [1 << 20, 12800 * 64]).map((n) => ({
    op: 'scale_shift',                 // the kernel file: kernels/scale_shift.ts
    shape: `n${n}`,
    dims: { n },
    flops: 3 * n,                      // forward 3·x + 1, backward 3·gy
    bytes: 16 * n,                     // x, out, gy, dx once each
    inputs: () => ({ x: rand([n], 1), gy: rand([n], 2) }),
    reference: ({ x, gy }) => ({ out: refScaleShift(f64(x).data, 3, 1), dx: f64(gy).data.map((g) => 3 * g) }),
    variants: [
      engineVariant('fused', 'fused', { grads: ['x'], gy: 'gy', forward: ({ x }) => scaleShiftOp.apply([x!], { a: 3, b: 1 }) }),
      engineVariant('composed', 'composed', { grads: ['x'], gy: 'gy', forward: ({ x }) => add(mul(x!, 3), 1) }),
      tfjsVariant({ grads: ['x'], gy: 'gy', forward: (tf, { x }) => tf.add(tf.mul(x!, 3), 1) }),
    ],
  }));
}
