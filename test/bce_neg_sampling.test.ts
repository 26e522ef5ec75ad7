// bce_neg_sampling (kernels/bce_neg_sampling.ts): the official S3-Rec fine-tuning loss (one sampled negative)
// against its float64 reference: forward, GPU backward, and the reference backward by finite differences; padded
// rows, the 1e-24 regime, magnitudes, masks, ids outside the table.
import { expect, it } from 'vitest';
import { sync, Tensor } from '../engine/index.js';
import { bceNegSampling, refBceNegSampling, refBceNegSamplingGrad, refBceNegSamplingRow } from '../kernels/bce_neg_sampling.js';
import { checkOp, describeGpu, type F64 } from './harness.js';
import { pairIdInputs, type PairCase } from './ids.js';


function bceIds(c: PairCase & { V: number; idRange?: readonly [number, number] }): Promise<void> {
  const { N, D, V } = c;
  const inputs = pairIdInputs(c);
  const red = c.reduction ?? 'mean';
  const x = (xs: F64[]) => ({ h: xs[0]!, table: xs[1]!, posIds: xs[2]!, negIds: xs[3]!, mask: c.mask ? xs[4]! : null, reduction: red });
  return checkOp({
    name: `bce_neg_sampling N${N} D${D} V${V}${c.mask ? ` mask ${c.mask}` : ''} ${red}`,
    inputs,
    run: (t) => bceNegSampling(t[0]!, t[1]!, t[2]!, t[3]!, { reduction: red, ...(c.mask ? { mask: t[4]! } : {}) }),
    ref: (xs) => refBceNegSampling(x(xs)),
    refGrad: (xs, gy) => {
      const g = refBceNegSamplingGrad(x(xs), gy.data[0]!);
      return [g.dh, g.dtable, null, null, null].slice(0, xs.length);
    },
  });
}

describeGpu('bce_neg_sampling', () => {
  it('size 1 (a padded row: loss 0)', () => bceIds({ N: 1, D: 1, V: 1 }));
  it('primes; pos == 0 rows are padding', () => bceIds({ N: 13, D: 3, V: 7 }));
  it('scores in the 1e-24 regime (|s| up to ~80)', () => bceIds({ N: 31, D: 4, V: 11, range: [-4.5, 4.5] }));
  it('magnitudes +-1000 (terms saturate at -log(1e-24))', () => bceIds({ N: 31, D: 4, V: 11, range: [-1000, 1000] }));
  it('B 7 x L 1, D 64, with mask, sum', () => bceIds({ N: 7, D: 64, V: 31, mask: 'some', reduction: 'sum' }));
  it('workgroup size + 1 rows, every row padded', async () => {
    await bceIds({ N: 65, D: 8, V: 97 });
    await bceIds({ N: 13, D: 4, V: 1 }); // V = 1: every pos id is 0
  });
  it('official formula: 1 - sigmoid(s) + 1e-24 equals sigmoid(-s) + 1e-24 in float64 where it is not saturated', () => {
    for (const s of [-30, -5, 0, 5, 30]) {
      const official = -Math.log(1 / (1 + Math.exp(-s)) + 1e-24) - Math.log(1 - 1 / (1 + Math.exp(-2)) + 1e-24);
      expect(refBceNegSamplingRow(s, 2)[0]).toBeCloseTo(official, 9);
    }
  });
  it('negative ids outside the table are an error naming the op (default id checks)', async () => {
    const h = Tensor.from(new Float32Array(8), [2, 4]);
    const table = Tensor.from(new Float32Array(12), [3, 4]);
    const pos = Tensor.from(new Int32Array([1, 2]), [2], 'i32');
    const bad = Tensor.from(new Int32Array([-5, 1]), [2], 'i32');
    const l = bceNegSampling(h, table, pos, bad);
    await expect(l.item()).rejects.toThrow(/bce_neg_sampling: negative id -5 at position 0/);
    for (const t of [h, table, pos, bad, l]) t.dispose();
    await sync();
  });
});
