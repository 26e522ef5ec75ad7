import { it } from 'vitest';
import * as F from '../kernels/index.js';
import { checkOp, describeGpu } from './harness.js';

const SHAPES: Array<[number[], number | null]> = [
  [[1], null],
  [[1], 0],
  [[257], null],
  [[7, 13], 0],
  [[7, 13], 1],
  [[7, 13], -1],
  [[3, 64, 5], 1],
  [[3, 65, 5], 2],
  [[2, 63, 1], 1],
  [[12800, 64], 0], // bias gradient shape: split into chunks
  [[1031, 64], 0], // prime R with few outputs: single pass
  [[4, 100003], 1], // long rows
  [[100003], null],
  [[100003, 3], 0], // llvmpipe stops any loop after 65,535 iterations: long serial loops must be chunked
  [[5, 3, 12], 1], // inner a multiple of 4: column sums as vec4s
  [[2, 7, 1028], 1], // 257 vec4 columns per outer row
  [[70001, 8], 0], // vec4 columns, chunked
];

describeGpu('reduce', () => {
  for (const [shape, axis] of SHAPES) {
    for (const kind of ['sum', 'mean'] as const) {
      it(`${kind} [${shape}] axis ${axis}`, async () => {
        const R = axis === null ? shape.reduce((a, b) => a * b, 1) : shape.at(axis)!;
        const scale = kind === 'mean' ? 1 / R : 1;
        for (const keepdim of [false, true]) {
          await checkOp({
            name: `${kind} [${shape}] axis ${axis} keepdim ${keepdim}`,
            inputs: [{ shape }],
            run: ([x]) => F[kind](x!, axis, keepdim),
            ref: ([x]) => F.refSum(x!, axis, keepdim, scale),
            refGrad: ([x], gy) => [F.refSumGrad(x!, axis, gy, scale)],
            // Sums of up to 1e5 terms of magnitude 2 in f32: error grows ~sqrt(R)*eps*|x|.
            tol: { atol: R > 10000 ? 2e-3 : 1e-4, rtol: 1e-4 },
          });
        }
      });
    }
  }
  for (const [shape, axis] of [
    [[1], 0],
    [[7, 13], 1],
    [[7, 13], 0],
    [[3, 257], 1],
    [[5, 3, 65], 1],
  ] as Array<[number[], number]>) {
    it(`max [${shape}] axis ${axis}`, async () => {
      await checkOp({
        name: `max [${shape}] axis ${axis}`,
        inputs: [{ shape, range: [-1000, 1000] }],
        run: ([x]) => F.max(x!, axis),
        ref: ([x]) => F.refMax(x!, axis).out,
        refGrad: ([x], gy) => [F.refMaxGrad(x!, axis, gy)],
      });
    });
  }
  it('max gives the gradient to the first of tied maxima', async () => {
    await checkOp({
      name: 'max ties',
      inputs: [{ shape: [2, 5], values: [1, 3, 3, 0, 3, -1, -1, -1, -1, -1] }],
      run: ([x]) => F.max(x!, 1),
      ref: ([x]) => F.refMax(x!, 1).out,
      refGrad: ([x], gy) => [F.refMaxGrad(x!, 1, gy)],
      gradcheck: false, // ties make max non-differentiable; the GPU must match the documented first-argmax rule
    });
  });
  it('broadcastTo and its gradient', async () => {
    const { ref } = await import('../engine/index.js');
    await checkOp({
      name: 'broadcastTo',
      inputs: [{ shape: [3, 1, 5] }],
      run: ([x]) => F.broadcastTo.apply([x!], { shape: [2, 3, 7, 5] }),
      ref: ([x]) => {
        const out = ref.zerosF64([2, 3, 7, 5]);
        for (let i = 0; i < out.data.length; i++) out.data[i] = x!.data[ref.broadcastIndex(i, out.shape, x!.shape)]!;
        return out;
      },
      refGrad: ([x], gy) => [ref.sumTo(gy, x!.shape)],
    });
  });
});
