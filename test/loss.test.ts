// test/loss.test.ts — where, maskedFill, clamp, sumSquares, bce, bceWithLogits, crossEntropy (kernels/loss.ts)
// against their float64 references, including saturated inputs (p = 0 / 1, logits +-1000) and ignored rows.
import { describe, expect, it } from 'vitest';
import { ref, Tensor } from '../engine/index.js';
import * as L from '../kernels/loss.js';
import { checkOp, describeGpu, sumTol, type F64 } from './harness.js';

const REDUCTIONS: L.LossReduction[] = ['none', 'sum', 'mean'];
const num = (v: number): F64 => ({ data: Float64Array.of(v), shape: [] });

describeGpu('loss', () => {
  describe('where / maskedFill', () => {
    const CASES: Array<[number[], number[], number[]]> = [
      [[1], [1], [1]],
      [[7], [7], [7]],
      [[257], [257], [257]],
      [[3, 65], [3, 65], [3, 65]],
      [[3, 1, 5], [4, 5], [1]],
      [[5], [2, 3, 5], [3, 1]],
      [[1], [63], [63]],
    ];
    for (const dtype of ['u32', 'i32'] as const) {
      for (const [sc, sa, sb] of CASES) {
        it(`where ${dtype} [${sc}] ? [${sa}] : [${sb}]`, () =>
          checkOp({
            name: `where ${dtype} [${sc}] [${sa}] [${sb}]`,
            // i32 conditions include negative values (nonzero = true).
            inputs: [{ shape: sc, dtype, range: dtype === 'i32' ? [-1, 1] : [0, 2] }, { shape: sa }, { shape: sb }],
            run: ([c, a, b]) => L.where(c!, a!, b!),
            ref: ([c, a, b]) => L.refWhere(c!, a!, b!),
            refGrad: ([c, a, b], gy) => L.refWhereGrad(c!, a!, b!, gy),
          }));
      }
    }
    it('where with scalar values', async () => {
      await checkOp({
        name: 'where tensor : scalar',
        inputs: [{ shape: [4, 65], dtype: 'u32', range: [0, 1] }, { shape: [4, 65] }],
        run: ([c, a]) => L.where(c!, a!, -10000),
        ref: ([c, a]) => L.refWhere(c!, a!, num(-10000)),
        refGrad: ([c, a], gy) => [null, L.refWhereGrad(c!, a!, num(-10000), gy)[1]],
      });
      await checkOp({
        name: 'where scalar : tensor',
        inputs: [{ shape: [31], dtype: 'i32', range: [0, 1] }, { shape: [31] }],
        run: ([c, b]) => L.where(c!, 2.5, b!),
        ref: ([c, b]) => L.refWhere(c!, num(2.5), b!),
        refGrad: ([c, b], gy) => [null, L.refWhereGrad(c!, num(2.5), b!, gy)[2]],
      });
    });
    for (const value of [-1e8, -10000, 0]) {
      it(`maskedFill ${value} with a broadcast padding mask`, () =>
        checkOp({
          name: `maskedFill ${value}`,
          inputs: [{ shape: [2, 3, 4, 5], range: [-100, 100] }, { shape: [2, 1, 1, 5], dtype: 'u32', range: [0, 1] }],
          run: ([x, m]) => L.maskedFill(x!, m!, value),
          ref: ([x, m]) => L.refMaskedFill(x!, m!, value),
          refGrad: ([x, m], gy) => [L.refMaskedFillGrad(x!, m!, gy), null],
          // maskedFill is linear in x: a large step is exact, and a 1e-6 step would drown in the float64
          // rounding of the -1e8 fills inside <out, gy>.
          gradcheck: { eps: 0.5 },
        }));
    }
    it('rejects f32 conditions and masks that do not broadcast to x', () => {
      const x = Tensor.empty([2, 3]);
      const f = Tensor.empty([2, 3]);
      const big = Tensor.empty([4, 2, 3], 'u32');
      expect(() => L.where(f, x, x)).toThrow(/must be u32 or i32/);
      expect(() => L.maskedFill(x, big, 0)).toThrow(/does not broadcast to x/);
      expect(() => L.where(big, x, Tensor.empty([5]))).toThrow(/do not broadcast/);
      for (const t of [x, f, big]) t.dispose();
    });
  });

  describe('clamp / sumSquares', () => {
    for (const [lo, hi] of [[-1, 1], [null, 0.5], [-0.5, null], [0, 0]] as Array<[number | null, number | null]>) {
      it(`clamp [${lo}, ${hi}]`, async () => {
        for (const n of [1, 7, 257]) {
          await checkOp({
            name: `clamp [${lo}, ${hi}] n=${n}`,
            inputs: [{ shape: [n], range: [-3, 3] }],
            run: ([x]) => L.clamp(x!, lo, hi),
            ref: ([x]) => L.refClamp(x!, lo, hi),
            refGrad: ([x], gy) => [L.refClampGrad(x!, lo, hi, gy)],
          });
        }
      });
    }
    it('clamp passes the gradient at the bounds (inclusive) and handles +-1000', async () => {
      await checkOp({
        name: 'clamp at bounds',
        inputs: [{ shape: [8], values: [-1, 1, -1.0000001, 1.0000001, 0, -1000, 1000, 0.999] }],
        run: ([x]) => L.clamp(x!, -1, 1),
        ref: ([x]) => L.refClamp(x!, -1, 1),
        refGrad: ([x], gy) => [L.refClampGrad(x!, -1, 1, gy)],
        gradcheck: false, // clamp is not differentiable at its bounds; PyTorch's convention (inclusive) is checked instead
      });
    });
    for (const shape of [[1], [257], [1823, 7]]) {
      for (const scale of [1, 0.5]) {
        it(`sumSquares [${shape}] scale ${scale}`, () =>
          checkOp({
            name: `sumSquares [${shape}] scale ${scale}`,
            inputs: [{ shape, range: [-100, 100] }],
            run: ([x]) => L.sumSquares(x!, { scale }),
            ref: ([x]) => L.refSumSquares(x!, scale),
            refGrad: ([x], gy) => [L.refSumSquaresGrad(x!, gy, scale)],
            // A sum of n squares (one sign) in f32: relative error ~ u * sqrt(n), derived from the reduction length.
            tol: sumTol(shape.reduce((a, b) => a * b, 1)),
            // A 1e-6 step on inputs of 100 over a sum of ~4e7: cancellation in the float64 difference.
            gradcheck: { eps: 1e-3 },
          }));
      }
    }
  });

  describe('bce / bceWithLogits', () => {
    for (const name of ['bce', 'bce_with_logits'] as const) {
      const fn = name === 'bce' ? L.bce : L.bceWithLogits;
      for (const reduction of REDUCTIONS) {
        for (const shape of [[1], [7], [3, 65], [256, 50]]) {
          it(`${name} ${reduction} [${shape}]`, async () => {
            for (const hard of [true, false]) {
              await checkOp({
                name: `${name} ${reduction} [${shape}] ${hard ? 'hard' : 'soft'} targets`,
                inputs: [
                  { shape, range: name === 'bce' ? [0.02, 0.98] : [-6, 6] },
                  hard ? { shape, values: Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => (i * 7) % 3 === 0 ? 1 : 0) } : { shape, range: [0, 1] },
                ],
                run: ([a, t]) => fn(a!, t!, { reduction }),
                ref: ([a, t]) => L.refBinaryLoss(name, a!, t!, reduction),
                refGrad: ([a, t], gy) => L.refBinaryLossGrad(name, a!, t!, gy, reduction),
              });
            }
          });
        }
      }
    }

    it('bce with saturated probabilities (p = 0 or 1 exactly) gives the official finite values', async () => {
      const p = [0, 1, 0, 1, 0.5, 1e-30, 1 - 2 ** -24, 0];
      const t = [0, 1, 1, 0, 1, 1, 0, 0.5];
      for (const reduction of REDUCTIONS) {
        await checkOp({
          name: `bce saturated ${reduction}`,
          inputs: [{ shape: [8], values: p }, { shape: [8], values: t }],
          run: ([a, b]) => L.bce(a!, b!, { reduction }),
          ref: ([a, b]) => L.refBce(a!, b!, reduction),
          refGrad: ([a, b], gy) => L.refBinaryLossGrad('bce', a!, b!, gy, reduction),
          gradcheck: false, // the log clamp at -100 and the 1e-12 floor are kinks; PyTorch's formulas are compared
        });
      }
      // The exact official numbers: -log clamped at 100, and PyTorch's gradient (p - t) / max(p (1 - p), 1e-12).
      const a = Tensor.from(Float32Array.from(p)).requireGrad();
      const b = Tensor.from(Float32Array.from(t));
      const y = L.bce(a, b, { reduction: 'none' });
      const got = await y.toArray();
      expect(Array.from(got.slice(0, 4), (v) => v + 0)).toEqual([0, 0, 100, 100]); // + 0: -0 -> 0
      expect(got.every((v) => Number.isFinite(v))).toBe(true);
      const { backward } = await import('../engine/index.js');
      backward(y, Tensor.from(new Float32Array(8).fill(1)));
      const g = await a.grad!.toArray();
      expect(g.every((v) => Number.isFinite(v))).toBe(true);
      expect(g[0]).toBe(0);
      expect(g[2]! / -1e12).toBeCloseTo(1, 6);
      expect(g[3]! / 1e12).toBeCloseTo(1, 6);
      for (const x of [a.grad!, a, b, y]) x.dispose();
    });

    it('bceWithLogits at logits +-1000 is finite (0 or 1000) with gradients sigmoid - t', async () => {
      for (const reduction of REDUCTIONS) {
        await checkOp({
          name: `bceWithLogits +-1000 ${reduction}`,
          inputs: [
            { shape: [6], values: [1000, -1000, 1000, -1000, 88, -88] },
            { shape: [6], values: [1, 0, 0, 1, 0.3, 0.7] },
          ],
          run: ([a, b]) => L.bceWithLogits(a!, b!, { reduction }),
          ref: ([a, b]) => L.refBceWithLogits(a!, b!, reduction),
          refGrad: ([a, b], gy) => L.refBinaryLossGrad('bce_with_logits', a!, b!, gy, reduction),
        });
      }
    });

    it('rejects mismatched shapes and unknown reductions', () => {
      const a = Tensor.empty([3]);
      const b = Tensor.empty([4]);
      expect(() => L.bce(a, b)).toThrow(/same shape/);
      expect(() => L.bceWithLogits(a, a, { reduction: 'avg' as L.LossReduction })).toThrow(/reduction 'avg'/);
      a.dispose();
      b.dispose();
    });
  });

  describe('crossEntropy', () => {
    const SHAPES: Array<[number, number]> = [[1, 1], [7, 13], [2, 64], [5, 1000], [3, 12103], [300, 50]];
    for (const [N, C] of SHAPES) {
      it(`crossEntropy [${N}, ${C}]`, async () => {
        for (const reduction of REDUCTIONS) {
          for (const variant of ['row', 'wg'] as const) {
            await checkOp({
              name: `crossEntropy [${N}, ${C}] ${reduction} ${variant}`,
              inputs: [{ shape: [N, C], range: [-4, 4] }, { shape: [N], dtype: 'i32', range: [0, C - 1] }],
              run: ([x, t]) => L.crossEntropy(x!, t!, { reduction, variant }),
              ref: ([x, t]) => L.refCrossEntropy(x!, t!, reduction),
              refGrad: ([x, t], gy) => [L.refCrossEntropyGrad(x!, t!, gy, reduction), null],
            });
          }
        }
      });
    }

    it('ignored rows (default -100 and a custom ignoreIndex) and logits of +-1000', async () => {
      const N = 9;
      const C = 65;
      const tg = [3, -100, 64, 0, -100, 7, 0, 12, 1];
      for (const reduction of REDUCTIONS) {
        await checkOp({
          name: `crossEntropy ignore -100 ${reduction}`,
          inputs: [{ shape: [N, C], range: [-1000, 1000] }, { shape: [N], dtype: 'i32', values: tg }],
          run: ([x, t]) => L.crossEntropy(x!, t!, { reduction }),
          ref: ([x, t]) => L.refCrossEntropy(x!, t!, reduction),
          refGrad: ([x, t], gy) => [L.refCrossEntropyGrad(x!, t!, gy, reduction), null],
          // Losses reach ~2000 and are differences of f32 logits of magnitude 1000 (ulp 6e-5).
          tol: { atol: 5e-4, rtol: 1e-4 },
        });
        await checkOp({
          name: `crossEntropy ignoreIndex 0 ${reduction}`,
          inputs: [{ shape: [N, C] }, { shape: [N], dtype: 'i32', values: tg.map((v) => (v < 0 ? 5 : v)) }],
          run: ([x, t]) => L.crossEntropy(x!, t!, { reduction, ignoreIndex: 0 }),
          ref: ([x, t]) => L.refCrossEntropy(x!, t!, reduction, 0),
          refGrad: ([x, t], gy) => [L.refCrossEntropyGrad(x!, t!, gy, reduction, 0), null],
        });
      }
    });

    it('all rows ignored: mean is NaN (PyTorch), sum is 0, gradients are 0', async () => {
      for (const reduction of ['mean', 'sum'] as const) {
        await checkOp({
          name: `crossEntropy all ignored ${reduction}`,
          inputs: [{ shape: [4, 7] }, { shape: [4], dtype: 'i32', values: [-100, -100, -100, -100] }],
          run: ([x, t]) => L.crossEntropy(x!, t!, { reduction }),
          ref: ([x, t]) => L.refCrossEntropy(x!, t!, reduction),
          refGrad: ([x, t], gy) => [L.refCrossEntropyGrad(x!, t!, gy, reduction), null],
          gradcheck: false, // the mean is NaN everywhere, so finite differences are NaN; the gradient is exactly 0
        });
      }
    });

    it('a target outside [0, C) gives NaN for its row only', async () => {
      await checkOp({
        name: 'crossEntropy out-of-range target',
        inputs: [{ shape: [4, 7] }, { shape: [4], dtype: 'i32', values: [1, 7, -3, 6] }],
        run: ([x, t]) => L.crossEntropy(x!, t!, { reduction: 'none' }),
        ref: ([x, t]) => L.refCrossEntropy(x!, t!, 'none'),
      });
    });

    it('rejects bad shapes and dtypes', () => {
      const x = Tensor.empty([3, 4]);
      const t = Tensor.empty([3], 'i32');
      const tu = Tensor.empty([3], 'u32');
      const t2 = Tensor.empty([2], 'i32');
      expect(() => L.crossEntropy(x, tu)).toThrow(/must be i32/);
      expect(() => L.crossEntropy(x, t2)).toThrow(/must be \[3\]/);
      expect(() => L.crossEntropy(x.view([12]), t)).toThrow(/must be \[N, C\]/);
      for (const v of [x, t, tu, t2]) v.dispose();
      expect(ref.broadcastShapes([1], [3])).toEqual([3]);
    });
  });
});
