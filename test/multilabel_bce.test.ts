// multilabel_bce (kernels/multilabel_bce.ts): the official S3-Rec AAP / MAP loss, CSR and dense targets, against
// its float64 reference: forward, GPU backward, and the reference backward by finite differences; tile edges,
// soft targets, masks, magnitudes, the S3-Rec shape, empty CSR, a bit-reproducible table gradient.
import { expect, it } from 'vitest';
import { backward, ref, sync, Tensor } from '../engine/index.js';
import type { Reduction } from '../kernels/common.js';
import { csrTargets, multiLabelBce, refBceElem, refCsrToDense, refMultiLabelBce, refMultiLabelBceGrad } from '../kernels/multilabel_bce.js';
import { checkOp, describeGpu, type F64, type InputSpec } from './harness.js';

type MaskKind = 'some' | 'all';
function maskValues(N: number, kind: MaskKind): number[] {
  return Array.from({ length: N }, (_, n) => (kind === 'all' || n % 3 === 1 ? 0 : n % 5 === 2 ? 0.5 : 1));
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
