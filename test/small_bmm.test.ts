// small_bmm (kernels/small_bmm.ts): the batched products tiny on one side (AttRec's composed attention), nt and nn,
// against the float64 matmul reference at each vector width, and a product of a tensor with itself.
import { it } from 'vitest';
import { refMatmul, refMatmulGrad } from '../kernels/matmul.js';
import { smallBmmNN, smallBmmNT } from '../kernels/small_bmm.js';
import { checkOp, describeGpu } from './harness.js';

describeGpu('small_bmm', () => {
  const cases: Array<[number, number, number, number]> = [[1, 1, 1, 1], [7, 5, 5, 150], [3, 4, 6, 13], [65, 5, 3, 18], [2, 1, 5, 152]];
  for (const [Bt, M, N, K] of cases) {
    it(`nt and nn: Bt=${Bt} M=${M} N=${N} K=${K} (vec width ${K % 4 === 0 ? 4 : K % 2 === 0 ? 2 : 1})`, async () => {
      await checkOp({
        name: `small_bmm_nt ${Bt}x${M}x${N}x${K}`,
        inputs: [{ shape: [Bt, M, K] }, { shape: [Bt, N, K] }],
        run: ([a, b]) => smallBmmNT(a!, b!),
        ref: ([a, b]) => refMatmul(a!, b!, { transB: true }),
        refGrad: ([a, b], gy) => refMatmulGrad(a!, b!, gy, { transB: true }),
      });
      await checkOp({
        name: `small_bmm_nn ${Bt}x${M}x${N}x${K}`,
        inputs: [{ shape: [Bt, M, N] }, { shape: [Bt, N, K] }],
        run: ([a, b]) => smallBmmNN(a!, b!),
        ref: ([a, b]) => refMatmul(a!, b!),
        refGrad: ([a, b], gy) => refMatmulGrad(a!, b!, gy),
      });
    });
  }
  it('a and b the same tensor (G = Z Z^T): both gradients summed', () =>
    checkOp({
      name: 'small_bmm_nt self',
      inputs: [{ shape: [9, 5, 38] }],
      run: ([z]) => smallBmmNT(z!, z!),
      ref: ([z]) => refMatmul(z!, z!, { transB: true }),
      refGrad: ([z], gy) => {
        const [ga, gb] = refMatmulGrad(z!, z!, gy, { transB: true });
        return [{ data: ga.data.map((v, i) => v + gb.data[i]!), shape: ga.shape }];
      },
    }));
});
