// infonce / infonceDense against the float64 reference: forward, GPU backward vs the reference backward, and
// the reference backward vs finite differences; plus the deterministic row index and scatter on their own.
import { expect, it } from 'vitest';
import { backward, flags, ref, sync, Tensor } from '../engine/index.js';
import { infonce, infonceDense, refInfonce, refInfonceGrad, type Reduction } from '../kernels/infonce.js';
import { checkOp, describeGpu, expectClose, type F64, type InputSpec } from './harness.js';

interface Case {
  N: number;
  C: number;
  D: number;
  V: number;
  tau?: number;
  pos?: boolean;
  /** 'some': a pattern of 0, 0.5 and 1 weights (whole rows masked out); 'all': every row masked. */
  mask?: 'some' | 'all';
  range?: readonly [number, number];
  idRange?: readonly [number, number];
  posRange?: readonly [number, number];
  reduction?: Reduction;
  tol?: { atol: number; rtol: number };
}

function maskValues(N: number, kind: 'some' | 'all'): number[] {
  return Array.from({ length: N }, (_, n) => (kind === 'all' || n % 3 === 1 ? 0 : n % 5 === 2 ? 0.5 : 1));
}

function idsCase(c: Case): Promise<void> {
  const { N, C, D, V } = c;
  const inputs: InputSpec[] = [
    { shape: [N, D], range: c.range }, // q
    { shape: [V, D], range: c.range }, // table
    { shape: [N, C], dtype: 'i32', range: c.idRange ?? [0, V - 1] }, // cand
  ];
  if (c.pos) inputs.push({ shape: [N], dtype: 'i32', range: c.posRange ?? [0, C - 1] });
  if (c.mask) inputs.push({ shape: [N], values: maskValues(N, c.mask), grad: false });
  const opts = (xs: F64[]) => ({
    temperature: c.tau ?? 1,
    reduction: c.reduction ?? 'mean',
    pos: c.pos ? xs[3]! : null,
    mask: c.mask ? xs[c.pos ? 4 : 3]! : null,
  });
  const name = `infonce N${N} C${C} D${D} V${V}${c.tau ? ` tau ${c.tau}` : ''}${c.pos ? ' pos' : ''}${c.mask ? ` mask ${c.mask}` : ''}${c.reduction === 'sum' ? ' sum' : ''}`;
  return checkOp({
    name,
    inputs,
    run: (ts) =>
      infonce(ts[0]!, ts[1]!, ts[2]!, {
        temperature: c.tau ?? 1,
        reduction: c.reduction ?? 'mean',
        ...(c.pos ? { pos: ts[3]! } : {}),
        ...(c.mask ? { mask: ts[c.pos ? 4 : 3]! } : {}),
      }),
    ref: (xs) => refInfonce(xs[0]!, xs[1]!, xs[2]!, opts(xs)),
    refGrad: (xs, gy) => [...refInfonceGrad(xs[0]!, xs[1]!, xs[2]!, opts(xs), gy.data[0]!), null, null, null].slice(0, xs.length),
    ...(c.tol ? { tol: c.tol } : {}),
  });
}

function denseCase(c: { N: number; M: number; D: number; tau?: number; mask?: 'some' | 'all'; range?: readonly [number, number]; reduction?: Reduction }): Promise<void> {
  const { N, M, D } = c;
  const inputs: InputSpec[] = [
    { shape: [N, D], range: c.range },
    { shape: [M, D], range: c.range },
    { shape: [N], dtype: 'i32', range: [0, M - 1] },
  ];
  if (c.mask) inputs.push({ shape: [N], values: maskValues(N, c.mask), grad: false });
  const opts = (xs: F64[]) => ({ temperature: c.tau ?? 1, reduction: c.reduction ?? 'mean', pos: xs[2]!, mask: c.mask ? xs[3]! : null, dense: true });
  return checkOp({
    name: `infonceDense N${N} M${M} D${D}${c.mask ? ` mask ${c.mask}` : ''}`,
    inputs,
    run: (ts) => infonceDense(ts[0]!, ts[1]!, ts[2]!, { temperature: c.tau ?? 1, reduction: c.reduction ?? 'mean', ...(c.mask ? { mask: ts[3]! } : {}) }),
    ref: (xs) => refInfonce(xs[0]!, xs[1]!, null, opts(xs)),
    refGrad: (xs, gy) => [...refInfonceGrad(xs[0]!, xs[1]!, null, opts(xs), gy.data[0]!), null, null].slice(0, xs.length),
  });
}

describeGpu('infonce', () => {
  it('size 1 (N = C = D = V = 1)', () => idsCase({ N: 1, C: 1, D: 1, V: 1 }));
  it('primes, vec4 path, temperature 0.07', () => idsCase({ N: 7, C: 13, D: 16, V: 50, tau: 0.07 }));
  it('scalar path (D = 3), few table rows (many repeats), pos column, masked rows', () =>
    idsCase({ N: 13, C: 7, D: 3, V: 5, pos: true, mask: 'some' }));
  it('workgroup size +- 1 rows (63, 64, 65)', async () => {
    for (const N of [63, 64, 65]) await idsCase({ N, C: 2, D: 8, V: 97, pos: true });
  });
  it('L = 1 (B = 7 rows of one position), D = 64', () => idsCase({ N: 7, C: 5, D: 64, V: 31 }));
  it('every row masked: loss 0, zero gradients', () => idsCase({ N: 13, C: 7, D: 4, V: 11, mask: 'all' }));
  it('sum reduction with weights', () => idsCase({ N: 31, C: 3, D: 5, V: 7, mask: 'some', reduction: 'sum' }));
  it('magnitudes +-1000 (no NaN/Inf)', () => idsCase({ N: 31, C: 7, D: 4, V: 13, range: [-1000, 1000], pos: true }));
  it('magnitudes +-100 with temperature 0.05', () => idsCase({ N: 13, C: 11, D: 8, V: 17, range: [-100, 100], tau: 0.05 }));
  it('out-of-range ids and positive columns are clamped (CHECK_IDS=0)', async () => {
    const prev = flags.checkIds;
    flags.checkIds = false;
    try {
      await idsCase({ N: 17, C: 5, D: 4, V: 6, idRange: [-3, 9], pos: true, posRange: [-2, 7] });
    } finally {
      flags.checkIds = prev;
    }
  });
  it('candidate ids outside the table are an error naming the op (default id checks)', async () => {
    const q = Tensor.from(new Float32Array(8), [2, 4]);
    const table = Tensor.from(new Float32Array(12), [3, 4]);
    const cand = Tensor.from(new Int32Array([0, 1, 2, 9]), [2, 2], 'i32');
    const l = infonce(q, table, cand);
    await expect(l.item()).rejects.toThrow(/infonce: candidate id 9 at position 3 is outside \[0, 3\)/);
    for (const t of [q, table, cand, l]) t.dispose();
    await sync();
  });
  it('irregular large: N 257, C 101, D 64, V 1031', () => idsCase({ N: 257, C: 101, D: 64, V: 1031, tau: 0.5, mask: 'some' }));

  it('dense: primes', () => denseCase({ N: 13, M: 17, D: 8 }));
  it('dense: size 1', () => denseCase({ N: 1, M: 1, D: 1 }));
  it('dense: in-batch 65 x 257, D 7, masked rows, temperature 0.2', () => denseCase({ N: 65, M: 257, D: 7, mask: 'some', tau: 0.2 }));
  it('dense: magnitudes +-1000, all rows masked', async () => {
    await denseCase({ N: 31, M: 29, D: 4, range: [-1000, 1000] });
    await denseCase({ N: 7, M: 5, D: 4, mask: 'all' });
  });

  it('table gradient is bit-reproducible; one id hit ~27000 times (unmasked padding-like rows)', async () => {
    const N = 2503;
    const C = 13;
    const D = 8;
    const V = 3;
    const rnd = ref.mulberry32(5);
    const qd = Float32Array.from({ length: N * D }, () => rnd() * 4 - 2);
    const td = Float32Array.from({ length: V * D }, () => rnd() * 4 - 2);
    const cd = Int32Array.from({ length: N * C }, (_, i) => (i % 7 === 3 ? 2 : 1));
    const runOnce = async (): Promise<Float32Array> => {
      const q = Tensor.from(qd, [N, D]).requireGrad();
      const t = Tensor.from(td, [V, D]).requireGrad();
      const cand = Tensor.from(cd, [N, C]);
      const loss = infonce(q, t, cand, { temperature: 0.3 });
      backward(loss);
      const g = (await t.grad!.toArray()) as Float32Array;
      for (const x of [q, t, cand, loss]) {
        x.grad?.dispose();
        x.dispose();
      }
      await sync();
      return g;
    };
    const a = await runOnce();
    const b = await runOnce();
    expect(Buffer.from(a.buffer).equals(Buffer.from(b.buffer))).toBe(true);
    const f = (x: Float32Array, shape: number[]): F64 => ({ data: Float64Array.from(x), shape });
    const [, want] = refInfonceGrad(f(qd, [N, D]), f(td, [V, D]), { data: Float64Array.from(cd), shape: [N, C] }, { temperature: 0.3 }, 1);
    expectClose('infonce dtable (3 rows)', a, want.data, { atol: 1e-4, rtol: 1e-3 });
  });
});
