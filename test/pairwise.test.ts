// The official S3-Rec losses (pairwise_sigmoid dense + ids, bce_neg_sampling, multilabel_bce CSR + dense)
// against their float64 references: forward, GPU backward, and the reference backward by finite differences.
import { expect, it } from 'vitest';
import { backward, flags, ref, sync, Tensor } from '../engine/index.js';
import {
  bceNegSampling,
  csrTargets,
  multiLabelBce,
  pairwiseSigmoidLoss,
  pairwiseSigmoidLossIds,
  refBceElem,
  refCsrToDense,
  refMultiLabelBce,
  refMultiLabelBceGrad,
  refPairGrad,
  refPairLoss,
  refPairRow,
} from '../kernels/pairwise.js';
import type { Reduction } from '../kernels/infonce.js';
import { checkOp, describeGpu, type F64, type InputSpec } from './harness.js';

type MaskKind = 'some' | 'all';
function maskValues(N: number, kind: MaskKind): number[] {
  return Array.from({ length: N }, (_, n) => (kind === 'all' || n % 3 === 1 ? 0 : n % 5 === 2 ? 0.5 : 1));
}

interface PairCase {
  N: number;
  D: number;
  mask?: MaskKind;
  range?: readonly [number, number];
  reduction?: Reduction;
}

function pairDense(c: PairCase): Promise<void> {
  const { N, D } = c;
  const inputs: InputSpec[] = [
    { shape: [N, D], range: c.range },
    { shape: [N, D], range: c.range },
    { shape: [N, D], range: c.range },
  ];
  if (c.mask) inputs.push({ shape: [N, 1].slice(0, 1), values: maskValues(N, c.mask), grad: false });
  const red = c.reduction ?? 'sum';
  const x = (xs: F64[]) => ({ kind: 'pairwise_sigmoid' as const, a: xs[0]!, pos: xs[1]!, neg: xs[2]!, mask: c.mask ? xs[3]! : null, reduction: red });
  return checkOp({
    name: `pairwiseSigmoidLoss N${N} D${D}${c.mask ? ` mask ${c.mask}` : ''} ${red}`,
    inputs,
    run: (t) => pairwiseSigmoidLoss(t[0]!, t[1]!, t[2]!, { reduction: red, ...(c.mask ? { mask: t[3]! } : {}) }),
    ref: (xs) => refPairLoss(x(xs)),
    refGrad: (xs, gy) => {
      const g = refPairGrad(x(xs), gy.data[0]!);
      return [g.da, g.dpos!, g.dneg!, null].slice(0, xs.length);
    },
  });
}

function pairIds(c: PairCase & { V: number; kind: 'pairwise_sigmoid' | 'bce_neg_sampling'; idRange?: readonly [number, number] }): Promise<void> {
  const { N, D, V } = c;
  const inputs: InputSpec[] = [
    { shape: [N, D], range: c.range },
    { shape: [V, D], range: c.range },
    { shape: [N], dtype: 'i32', range: c.idRange ?? [0, V - 1] },
    { shape: [N], dtype: 'i32', range: c.idRange ?? [0, V - 1] },
  ];
  if (c.mask) inputs.push({ shape: [N], values: maskValues(N, c.mask), grad: false });
  const red = c.reduction ?? (c.kind === 'bce_neg_sampling' ? 'mean' : 'sum');
  const x = (xs: F64[]) => ({ kind: c.kind, a: xs[0]!, table: xs[1]!, posIds: xs[2]!, negIds: xs[3]!, mask: c.mask ? xs[4]! : null, reduction: red });
  const fn = c.kind === 'bce_neg_sampling' ? bceNegSampling : pairwiseSigmoidLossIds;
  return checkOp({
    name: `${c.kind} ids N${N} D${D} V${V}${c.mask ? ` mask ${c.mask}` : ''} ${red}`,
    inputs,
    run: (t) => fn(t[0]!, t[1]!, t[2]!, t[3]!, { reduction: red, ...(c.mask ? { mask: t[4]! } : {}) }),
    ref: (xs) => refPairLoss(x(xs)),
    refGrad: (xs, gy) => {
      const g = refPairGrad(x(xs), gy.data[0]!);
      return [g.da, g.dtable!, null, null, null].slice(0, xs.length);
    },
  });
}

interface MlCase {
  N: number;
  A: number;
  D: number;
  targets: 'csr' | 'dense' | 'soft';
  mask?: MaskKind;
  range?: readonly [number, number];
  reduction?: Reduction;
  tol?: { atol: number; rtol: number };
}

function lists(N: number, A: number, seed: number): number[][] {
  const rnd = ref.mulberry32(seed);
  // 0-3 positives per row, ids in [-1, A] (out-of-range ids match nothing), some rows empty, duplicates possible.
  return Array.from({ length: N }, () => Array.from({ length: Math.floor(rnd() * 4) }, () => Math.floor(rnd() * (A + 2)) - 1));
}

function mlCase(c: MlCase): Promise<void> {
  const { N, A, D } = c;
  const red = c.reduction ?? 'sum';
  const L = lists(N, A, N * 131 + A);
  const offsets = [0];
  for (const l of L) offsets.push(offsets.at(-1)! + l.length);
  const flat = L.flat();
  const inputs: InputSpec[] = [
    { shape: [N, D], range: c.range },
    { shape: [A, D], range: c.range },
  ];
  if (c.targets === 'csr') {
    inputs.push({ shape: [N + 1], dtype: 'i32', values: offsets });
    inputs.push({ shape: [Math.max(flat.length, 1)], dtype: 'i32', values: flat.length ? flat : [0] });
  } else if (c.targets === 'dense') {
    inputs.push({ shape: [N, A], values: refCsrToDense(L, A).data, grad: false });
  } else {
    inputs.push({ shape: [N, A], range: [0, 1], grad: false });
  }
  const nT = c.targets === 'csr' ? 2 : 1;
  if (c.mask) inputs.push({ shape: [N], values: maskValues(N, c.mask), grad: false });
  const tOf = (xs: F64[]): F64 => (c.targets === 'csr' ? refCsrToDense(L, A) : xs[2]!);
  const mOf = (xs: F64[]): F64 | null => (c.mask ? xs[2 + nT]! : null);
  return checkOp({
    name: `multiLabelBce N${N} A${A} D${D} ${c.targets}${c.mask ? ` mask ${c.mask}` : ''} ${red}`,
    inputs,
    run: (t) => {
      const targets = c.targets === 'csr' ? { offsets: t[2]!, ids: t[3]! } : t[2]!;
      return multiLabelBce(t[0]!, t[1]!, targets, { reduction: red, ...(c.mask ? { mask: t[2 + nT]! } : {}) });
    },
    ref: (xs) => refMultiLabelBce(xs[0]!, xs[1]!, tOf(xs), mOf(xs), red),
    refGrad: (xs, gy) => [...refMultiLabelBceGrad(xs[0]!, xs[1]!, tOf(xs), mOf(xs), red, gy.data[0]!), null, null, null].slice(0, xs.length),
    ...(c.tol ? { tol: c.tol } : {}),
  });
}

describeGpu('pairwise_sigmoid', () => {
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
      await pairIds({ kind: 'pairwise_sigmoid', N: 29, D: 4, V: 5, mask: 'some', idRange: [-2, 6] });
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
    const bad = Tensor.from(new Int32Array([-5, 1]), [2], 'i32');
    const l2 = bceNegSampling(a, table, neg, bad);
    await expect(l2.item()).rejects.toThrow(/bce_neg_sampling: negative id -5 at position 0/);
    for (const t of [a, table, pos, neg, bad, l, l2]) t.dispose();
    await sync();
  });
  it('ids: size 1 and D = 64', async () => {
    await pairIds({ kind: 'pairwise_sigmoid', N: 1, D: 1, V: 1 });
    await pairIds({ kind: 'pairwise_sigmoid', N: 67, D: 64, V: 257, range: [-0.5, 0.5] });
  });
  it('ids: magnitudes +-1000, every row masked', async () => {
    await pairIds({ kind: 'pairwise_sigmoid', N: 31, D: 4, V: 7, range: [-1000, 1000] });
    await pairIds({ kind: 'pairwise_sigmoid', N: 13, D: 4, V: 7, mask: 'all' });
  });
  it('loss is bounded in [0.3133, 1.3133] per row', () => {
    for (const [sp, sn] of [[1e9, -1e9], [-1e9, 1e9], [0, 0], [3, -2]] as const) {
      const l = refPairRow('pairwise_sigmoid', sp, sn)[0];
      expect(l).toBeGreaterThanOrEqual(0.3132);
      expect(l).toBeLessThanOrEqual(1.3133);
    }
  });
});

describeGpu('bce_neg_sampling', () => {
  it('size 1 (a padded row: loss 0)', () => pairIds({ kind: 'bce_neg_sampling', N: 1, D: 1, V: 1 }));
  it('primes; pos == 0 rows are padding', () => pairIds({ kind: 'bce_neg_sampling', N: 13, D: 3, V: 7 }));
  it('scores in the 1e-24 regime (|s| up to ~80)', () => pairIds({ kind: 'bce_neg_sampling', N: 31, D: 4, V: 11, range: [-4.5, 4.5] }));
  it('magnitudes +-1000 (terms saturate at -log(1e-24))', () => pairIds({ kind: 'bce_neg_sampling', N: 31, D: 4, V: 11, range: [-1000, 1000] }));
  it('B 7 x L 1, D 64, with mask, sum', () => pairIds({ kind: 'bce_neg_sampling', N: 7, D: 64, V: 31, mask: 'some', reduction: 'sum' }));
  it('workgroup size + 1 rows, every row padded', async () => {
    await pairIds({ kind: 'bce_neg_sampling', N: 65, D: 8, V: 97 });
    await pairIds({ kind: 'bce_neg_sampling', N: 13, D: 4, V: 1 }); // V = 1: every pos id is 0
  });
  it('official formula: 1 - sigmoid(s) + 1e-24 equals sigmoid(-s) + 1e-24 in float64 where it is not saturated', () => {
    for (const s of [-30, -5, 0, 5, 30]) {
      const official = -Math.log(1 / (1 + Math.exp(-s)) + 1e-24) - Math.log(1 - 1 / (1 + Math.exp(-2)) + 1e-24);
      expect(refPairRow('bce_neg_sampling', s, 2)[0]).toBeCloseTo(official, 9);
    }
  });
});

describeGpu('multilabel_bce', () => {
  it('size 1', async () => {
    await mlCase({ N: 1, A: 1, D: 1, targets: 'csr' });
    await mlCase({ N: 1, A: 1, D: 1, targets: 'dense' });
  });
  it('primes, CSR targets, masked rows', () => mlCase({ N: 13, A: 7, D: 3, targets: 'csr', mask: 'some' }));
  it('tile edges: N 65, A 13, D 8 (vec4), dense 0/1 targets', () => mlCase({ N: 65, A: 13, D: 8, targets: 'dense' }));
  it('soft targets, mean', () => mlCase({ N: 7, A: 5, D: 4, targets: 'soft', reduction: 'mean', mask: 'some' }));
  it('every row masked', () => mlCase({ N: 9, A: 6, D: 4, targets: 'csr', mask: 'all' }));
  it('magnitudes +-1000 (clamped logs: 100 per wrong attribute, zero gradient)', () =>
    mlCase({ N: 31, A: 11, D: 4, targets: 'csr', range: [-1000, 1000] }));
  it('magnitudes +-100', () => mlCase({ N: 13, A: 17, D: 5, targets: 'dense', range: [-100, 100], mask: 'some' }));
  it('S3-Rec-like: A 638 (incl. attribute 0), D 64, 67 rows', () =>
    mlCase({ N: 67, A: 638, D: 64, targets: 'csr', range: [-0.3, 0.3], mask: 'some' }));
  it('clamp semantics of the reference', () => {
    expect(refBceElem(1000, 0)).toEqual([100, 0]);
    expect(refBceElem(-1000, 1)).toEqual([100, 0]);
    expect(refBceElem(-1000, 0)[0]).toBe(0);
    expect(refBceElem(50, 0)[0]).toBeCloseTo(50, 12); // exact softplus below the clamp
  });
  it('empty CSR (no positive anywhere) matches all-zero targets', async () => {
    const N = 5;
    const A = 3;
    const D = 4;
    const rnd = ref.mulberry32(3);
    const xd = Float32Array.from({ length: N * D }, () => rnd() * 2 - 1);
    const ad = Float32Array.from({ length: A * D }, () => rnd() * 2 - 1);
    const x = Tensor.from(xd, [N, D]);
    const at = Tensor.from(ad, [A, D]);
    const t = csrTargets(Array.from({ length: N }, () => []));
    const loss = multiLabelBce(x, at, t);
    const want = refMultiLabelBce({ data: Float64Array.from(xd), shape: [N, D] }, { data: Float64Array.from(ad), shape: [A, D] }, ref.zerosF64([N, A]), null, 'sum');
    expect((await loss.toArray())[0]).toBeCloseTo(want.data[0]!, 4);
    for (const v of [x, at, t.offsets, t.ids, loss]) v.dispose();
    await sync();
  });
  it('attribute-table gradient is bit-reproducible', async () => {
    const N = 203;
    const A = 37;
    const D = 16;
    const rnd = ref.mulberry32(9);
    const xd = Float32Array.from({ length: N * D }, () => rnd() * 2 - 1);
    const ad = Float32Array.from({ length: A * D }, () => rnd() * 2 - 1);
    const L = lists(N, A, 4);
    const once = async (): Promise<Buffer> => {
      const x = Tensor.from(xd, [N, D]).requireGrad();
      const at = Tensor.from(ad, [A, D]).requireGrad();
      const t = csrTargets(L);
      const loss = multiLabelBce(x, at, t);
      backward(loss);
      const g = Buffer.from(((await at.grad!.toArray()) as Float32Array).buffer);
      for (const v of [x, at]) v.grad?.dispose();
      for (const v of [x, at, t.offsets, t.ids, loss]) v.dispose();
      await sync();
      return g;
    };
    expect((await once()).equals(await once())).toBe(true);
  });
});
