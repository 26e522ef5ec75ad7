// pairwise (kernels/pairwise.ts): the official S3-Rec MIP / SP loss pairwise_sigmoid, dense and id forms, against
// its float64 reference: forward, GPU backward, and the reference backward by finite differences; masks, sizes
// around the workgroup, magnitudes, ids outside the table.
import { expect, it } from 'vitest';
import { flags, sync, Tensor } from '../engine/index.js';
import { pairwiseSigmoidLoss, pairwiseSigmoidLossIds, refPairwiseSigmoidGrad, refPairwiseSigmoidLoss, refPairwiseSigmoidRow } from '../kernels/pairwise.js';
import { checkOp, describeGpu, type F64, type InputSpec } from './harness.js';
import { maskValues, pairIdInputs, type PairCase } from './ids.js';


function pairDense(c: PairCase): Promise<void> {
  const { N, D } = c;
  const inputs: InputSpec[] = [
    { shape: [N, D], range: c.range },
    { shape: [N, D], range: c.range },
    { shape: [N, D], range: c.range },
  ];
  if (c.mask) inputs.push({ shape: [N, 1].slice(0, 1), values: maskValues(N, c.mask), grad: false });
  const red = c.reduction ?? 'sum';
  const x = (xs: F64[]) => ({ a: xs[0]!, pos: xs[1]!, neg: xs[2]!, mask: c.mask ? xs[3]! : null, reduction: red });
  return checkOp({
    name: `pairwiseSigmoidLoss N${N} D${D}${c.mask ? ` mask ${c.mask}` : ''} ${red}`,
    inputs,
    run: (t) => pairwiseSigmoidLoss(t[0]!, t[1]!, t[2]!, { reduction: red, ...(c.mask ? { mask: t[3]! } : {}) }),
    ref: (xs) => refPairwiseSigmoidLoss(x(xs)),
    refGrad: (xs, gy) => {
      const g = refPairwiseSigmoidGrad(x(xs), gy.data[0]!);
      return [g.da, g.dpos!, g.dneg!, null].slice(0, xs.length);
    },
  });
}

function pairIds(c: PairCase & { V: number; idRange?: readonly [number, number] }): Promise<void> {
  const { N, D, V } = c;
  const inputs = pairIdInputs(c);
  const red = c.reduction ?? 'sum';
  const x = (xs: F64[]) => ({ a: xs[0]!, table: xs[1]!, posIds: xs[2]!, negIds: xs[3]!, mask: c.mask ? xs[4]! : null, reduction: red });
  return checkOp({
    name: `pairwise_sigmoid ids N${N} D${D} V${V}${c.mask ? ` mask ${c.mask}` : ''} ${red}`,
    inputs,
    run: (t) => pairwiseSigmoidLossIds(t[0]!, t[1]!, t[2]!, t[3]!, { reduction: red, ...(c.mask ? { mask: t[4]! } : {}) }),
    ref: (xs) => refPairwiseSigmoidLoss(x(xs)),
    refGrad: (xs, gy) => {
      const g = refPairwiseSigmoidGrad(x(xs), gy.data[0]!);
      return [g.da, g.dtable!, null, null, null].slice(0, xs.length);
    },
  });
}

describeGpu('pairwise', () => {
  it('size 1', () => pairDense({ N: 1, D: 1 }));
  it('primes, scalar path', () => pairDense({ N: 13, D: 7, mask: 'some' }));
  it('workgroup size +- 1, vec4 path, mean', async () => {
    for (const N of [63, 64, 65]) await pairDense({ N, D: 16, reduction: 'mean', mask: 'some' });
  });
  it('every row masked', () => pairDense({ N: 7, D: 4, mask: 'all' }));
  it('magnitudes +-1000 and +-100', async () => {
    await pairDense({ N: 31, D: 4, range: [-1000, 1000] });
    await pairDense({ N: 31, D: 3, range: [-100, 100], mask: 'some' });
  });
  it('ids: few table rows (repeats), masked rows, out-of-range ids clamped (CHECK_IDS=0)', async () => {
    const prev = flags.checkIds;
    flags.checkIds = false;
    try {
      await pairIds({ N: 29, D: 4, V: 5, mask: 'some', idRange: [-2, 6] });
    } finally {
      flags.checkIds = prev;
    }
  });
  it('ids outside the table are an error naming the op (default id checks)', async () => {
    const a = Tensor.from(new Float32Array(8), [2, 4]);
    const table = Tensor.from(new Float32Array(12), [3, 4]);
    const pos = Tensor.from(new Int32Array([0, 7]), [2], 'i32');
    const neg = Tensor.from(new Int32Array([1, 2]), [2], 'i32');
    const l = pairwiseSigmoidLossIds(a, table, pos, neg);
    await expect(l.item()).rejects.toThrow(/pairwise_sigmoid: positive id 7 at position 1 is outside \[0, 3\)/);
    for (const t of [a, table, pos, neg, l]) t.dispose();
    await sync();
  });
  it('ids: size 1 and D = 64', async () => {
    await pairIds({ N: 1, D: 1, V: 1 });
    await pairIds({ N: 67, D: 64, V: 257, range: [-0.5, 0.5] });
  });
  it('ids: magnitudes +-1000, every row masked', async () => {
    await pairIds({ N: 31, D: 4, V: 7, range: [-1000, 1000] });
    await pairIds({ N: 13, D: 4, V: 7, mask: 'all' });
  });
  it('loss is bounded in [0.3133, 1.3133] per row', () => {
    for (const [sp, sn] of [[1e9, -1e9], [-1e9, 1e9], [0, 0], [3, -2]] as const) {
      const l = refPairwiseSigmoidRow(sp, sn)[0];
      expect(l).toBeGreaterThanOrEqual(0.3132);
      expect(l).toBeLessThanOrEqual(1.3133);
    }
  });
});
