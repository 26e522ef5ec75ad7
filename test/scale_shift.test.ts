// test/scale_shift.test.ts — the README's example test.
import { it } from 'vitest';
import { checkOp, describeGpu, ODD_SIZES } from './harness.js';
import { scaleShiftOp, refScaleShift } from '../kernels/scale_shift.js';

describeGpu('scale_shift', () => {
  for (const n of ODD_SIZES) it(`n=${n}`, () => checkOp({
    name: `scale_shift n=${n}`,
    inputs: [{ shape: [n] }],
    run: ([x]) => scaleShiftOp.apply([x!], { a: 3, b: 1 }),
    ref: ([x]) => ({ data: refScaleShift(x!.data, 3, 1), shape: x!.shape }),
    refGrad: (_xs, gy) => [{ data: gy.data.map((g) => 3 * g), shape: gy.shape }],
  }));
});
