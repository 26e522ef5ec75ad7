// The deterministic scatter (kernels/scatter.ts): GPU-built inverse index equal to the host one, segment sums
// bit-equal to a sequential f32 sum in ascending position, run-to-run bit-identical, dense / touched / accumulate
// modes; scatterAddRows through the harness; the row index and rows_scatter of the fused losses' table gradients.
import { describe, expect, it } from 'vitest';
import { ref, sync, Tensor } from '../engine/index.js';
import {
  buildInverseIndex, buildRowIndex, inverseIndexHost, radixPlan, refScatterRows, refSegmentSum, refSegmentSumF32, scatterAddRows, scatterRows,
  segmentSumRows, type Csr,
} from '../kernels/scatter.js';
import { checkOp, describeGpu, expectClose, type F64 } from './harness.js';
import { bitsEqual, nastyIds } from './ids.js';

async function csrArrays(c: Csr): Promise<{ offsets: number[]; perm: number[] }> {
  return { offsets: Array.from(await c.offsets.toArray()), perm: Array.from(await c.perm.toArray()).slice(0, c.M) };
}

describeGpu('scatter', () => {
  // V around the radix pass boundaries (255 -> 1 pass, 256 -> 2, 65536 -> 3), M around the 256-position
  // csr_rank block, and the S3-Rec / AttRec tables.
  const CASES: Array<[number, number]> = [
    [1, 1],
    [1, 257],
    [2, 63],
    [255, 255], // M around the 256-position csr_rank block
    [256, 256],
    [257, 257],
    [3, 513],
    [1683, 5000],
    [12103, 12800],
    [65536, 1000],
  ];
  for (const [V, M] of CASES) {
    for (const exclude of [null, 0]) {
      it(`GPU inverse index equals the host one: V=${V} M=${M} exclude=${exclude} (${radixPlan(V).passes} passes)`, async () => {
        const ids = nastyIds(M, V, V * 31 + M);
        const host = inverseIndexHost(ids, V, { exclude });
        const t = Tensor.from(ids, [M], 'i32');
        const csr = buildInverseIndex(t, V, { exclude });
        const got = await csrArrays(csr);
        expect(got.offsets).toEqual(Array.from(host.offsets));
        expect(got.perm).toEqual(Array.from(host.perm));
        // The host CSR itself: segments ascending in position, every counted id in its own segment.
        for (let v = 0; v < V; v++) {
          for (let s = host.offsets[v]!; s < host.offsets[v + 1]!; s++) {
            expect(ids[host.perm[s]!]).toBe(v);
            if (s > host.offsets[v]!) expect(host.perm[s]!).toBeGreaterThan(host.perm[s - 1]!);
          }
        }
        csr.dispose();
        t.dispose();
      });
    }
  }

  it('u32 ids and M = 0', async () => {
    const ids = Uint32Array.of(5, 2, 4294967295, 2, 0);
    const t = Tensor.from(ids, [5], 'u32');
    const csr = buildInverseIndex(t, 6);
    const host = inverseIndexHost(ids, 6);
    expect(await csrArrays(csr)).toEqual({ offsets: Array.from(host.offsets), perm: Array.from(host.perm) });
    csr.dispose();
    t.dispose();
    const empty = buildInverseIndex(Tensor.empty([0], 'i32'), 4);
    expect(Array.from(await empty.offsets.toArray())).toEqual([0, 0, 0, 0, 0]);
    const out = segmentSumRows(Tensor.empty([0, 3]), empty);
    expect(Array.from(await out.toArray())).toEqual(new Array(12).fill(0));
    empty.dispose();
    out.dispose();
  });

  // Values of mixed magnitude make the f32 sum order-sensitive: bit equality then pins the ascending order.
  for (const [V, M, D, outer] of [
    [1, 300, 3, 1],
    [7, 257, 65, 1],
    [13, 101, 64, 1], // vec4 kernel
    [5, 31, 4, 3], // outer > 1, vec4
    [12103, 12800, 64, 1], // S3-Rec item table
    [1683, 5000, 150, 1], // AttRec item table, D not a multiple of 4
  ] as Array<[number, number, number, number]>) {
    it(`segment sum is bit-equal to the ascending f32 sum: V=${V} M=${M} D=${D} outer=${outer}`, async () => {
      const ids = nastyIds(M, V, M + D);
      const rnd = ref.mulberry32(V + D);
      const shape = outer === 1 ? [M, D] : [outer, M, D];
      const src = Float32Array.from({ length: outer * M * D }, () => (rnd() - 0.5) * (rnd() < 0.1 ? 2000 : rnd() < 0.5 ? 1 : 1e-3));
      const srcT = Tensor.from(src, shape);
      const want = refSegmentSumF32(src, shape, ids, V, 0);
      const results: Float32Array[] = [];
      for (const hostIds of [false, true]) {
        for (let rep = 0; rep < 2; rep++) {
          const csr = buildInverseIndex(hostIds ? ids : Tensor.from(ids, [M], 'i32'), V, { exclude: 0 });
          const out = segmentSumRows(srcT, csr);
          results.push((await out.toArray()) as Float32Array);
          out.dispose();
          csr.dispose();
        }
      }
      for (const [k, r] of results.entries()) bitsEqual(`run ${k}`, r, want);
      // And close to the float64 sum (the f32 one is exact only up to rounding).
      const f64: F64 = refSegmentSum({ data: Float64Array.from(src), shape }, ids, V, 0);
      expectClose('segment sum vs float64', results[0]!, f64.data, { atol: 1e-3, rtol: 1e-4 });
      srcT.dispose();
    });
  }

  it('touched-only and accumulate modes leave untouched rows alone', async () => {
    const V = 9;
    const D = 5;
    const ids = Int32Array.of(3, 8, 3, 0, 11);
    const src = Float32Array.from({ length: ids.length * D }, (_, i) => i + 0.5);
    const base = Float32Array.from({ length: V * D }, (_, i) => -i - 0.25);
    const sums = refSegmentSumF32(src, [ids.length, D], ids, V);
    const touched = new Set([0, 3, 8]);
    const csr = buildInverseIndex(Tensor.from(ids), V);
    const srcT = Tensor.from(src, [ids.length, D]);
    for (const mode of ['touchedOnly', 'accumulate'] as const) {
      const out = Tensor.from(base, [V, D]);
      const ret = segmentSumRows(srcT, csr, { out, [mode]: true });
      expect(ret).toBe(out);
      const got = await out.toArray();
      const want = base.map((b, i) => {
        const v = Math.floor(i / D);
        if (!touched.has(v)) return b;
        return mode === 'accumulate' ? Math.fround(b + sums[i]!) : sums[i]!;
      });
      bitsEqual(mode, got, want);
      out.dispose();
    }
    expect(() => segmentSumRows(srcT, csr, { touchedOnly: true })).toThrow(/touchedOnly\/accumulate need opts.out/);
    expect(() => segmentSumRows(Tensor.empty([4, D]), csr)).toThrow(/segmentSumRows: src \[4, 5\] has 4 rows, the index was built from 5 ids/);
    expect(() => buildInverseIndex(Tensor.empty([3]), 4)).toThrow(/ids f32\[3\] must be i32 or u32/);
    expect(() => buildInverseIndex([1], 0)).toThrow(/V=0/);
    csr.dispose();
    srcT.dispose();
    await sync();
  });

  it('scatterAddRows (inverse index + segment sum, the embedding backward) through the harness, GPU and host ids', async () => {
    for (const [M, V, D] of [[1, 1, 1], [97, 13, 4], [257, 7, 65]] as const) {
      const rnd = ref.mulberry32(M + V);
      const values = Array.from({ length: M }, () => Math.floor(rnd() * V));
      for (const host of [false, true]) {
        await checkOp({
          name: `scatterAddRows M${M} V${V} D${D}${host ? ' host ids' : ''}`,
          inputs: [{ shape: [M, D] }, { shape: [M], dtype: 'i32', values }],
          run: ([g, ids]) => scatterAddRows(g!, host ? values : ids!, V),
          ref: ([g]) => refSegmentSum(g!, values, V),
          tol: { atol: 1e-5 * Math.sqrt(M), rtol: 1e-4 }, // M-term sums with cancellation
        });
      }
    }
  });

  describe('row index and scatter (the fused losses\' table gradients)', () => {
    for (const [M, K, V, D] of [
      [1, 1, 1, 1],
      [97, 1, 13, 4],
      [2 * 65, 2, 7, 3],
      [64 * 13, 13, 257, 16],
    ] as const) {
      it(`M ${M} K ${K} V ${V} D ${D}: segment sums in fixed order, masked rows left out`, async () => {
        const rnd = ref.mulberry32(M * 31 + V);
        const R = M / K;
        const ids = Int32Array.from({ length: M }, () => Math.floor(rnd() * (V + 2)) - 1); // includes -1 and V (clamped)
        const w = Float32Array.from({ length: R }, (_, n) => (n % 4 === 2 ? 0 : 1));
        const coef = Float32Array.from({ length: M }, () => rnd() * 2 - 1);
        const x = Float32Array.from({ length: R * D }, () => rnd() * 2 - 1);
        const tIds = Tensor.from(ids);
        const tW = Tensor.from(w);
        const tCoef = Tensor.from(coef);
        const tX = Tensor.from(x, [R, D]);
        const index = buildRowIndex(tIds, null, K, V, tW);
        const out = scatterRows(index, tCoef, tX, D);
        const offsets = (await index.offsets.toArray()) as Uint32Array;
        const entries = (await index.entries.toArray()) as Uint32Array;
        const valid = Array.from({ length: M }, (_, e) => e).filter((e) => w[Math.floor(e / K)] !== 0);
        expect(offsets[V]).toBe(valid.length);
        for (let v = 0; v < V; v++) {
          const seg = Array.from(entries.subarray(offsets[v]!, offsets[v + 1]!));
          const want = valid.filter((e) => Math.min(Math.max(ids[e]!, 0), V - 1) === v);
          expect(seg).toEqual(want);
        }
        const want = refScatterRows(ids, K, V, w, coef, { data: Float64Array.from(x), shape: [R, D] });
        expectClose('rows_scatter', await out.toArray(), want.data, { atol: 1e-5, rtol: 1e-4 });
        for (const t of [tIds, tW, tCoef, tX, out]) t.dispose();
        index.dispose();
        await sync();
      });
    }
  });
});
