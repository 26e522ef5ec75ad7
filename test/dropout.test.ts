// test/dropout.test.ts — dropout: the exact counter-based mask against the float64 reference, reproducibility,
// the identity cases, and the keep rate / independence statistically.
import { expect, it } from 'vitest';
import { backward, manualSeed, noGrad, rngState, rt, sync, Tensor } from '../engine/index.js';
import { dropout, dropoutRaw, refDropout, refDropoutMask } from '../kernels/dropout.js';
import { checkOp, describeGpu, ODD_SIZES } from './harness.js';

describeGpu('dropout', () => {
  for (const n of [...ODD_SIZES, 1028]) { // multiples of 4 take dropout{vec4} (1028: 257 vec4s, a workgroup + 1)
    it(`exact mask, n=${n}`, async () => {
      for (const p of [0.1, 0.5, 0.9]) {
        const seed = 1234 + n;
        const offset = 7 * n;
        await checkOp({
          name: `dropout n=${n} p=${p}`,
          inputs: [{ shape: [n] }],
          run: ([x]) => dropout(x!, { p, seed, offset }),
          ref: ([x]) => refDropout(x!, p, seed, offset),
          refGrad: (_xs, gy) => [refDropout(gy, p, seed, offset)],
        });
      }
    });
  }

  it('dropoutRaw (the launch under the op, no autograd) applies the same mask', () =>
    checkOp({
      name: 'dropoutRaw [7, 13] p=0.3',
      inputs: [{ shape: [7, 13], grad: false }],
      run: ([x]) => dropoutRaw(x!, { p: 0.3, seed: 3, offset: 5 }),
      ref: ([x]) => refDropout(x!, 0.3, 3, 5),
    }));

  it('multi-dimensional input, p = 1 gives zeros', async () => {
    await checkOp({
      name: 'dropout [3, 5, 64] p=0.5',
      inputs: [{ shape: [3, 5, 64], range: [-1000, 1000] }],
      run: ([x]) => dropout(x!, { p: 0.5, seed: 9, offset: 3 }),
      ref: ([x]) => refDropout(x!, 0.5, 9, 3),
      refGrad: (_xs, gy) => [refDropout(gy, 0.5, 9, 3)],
      // Values up to 2000 after scaling by 2: f32 relative precision.
      tol: { atol: 1e-5, rtol: 1e-6 },
    });
    await checkOp({
      name: 'dropout p=1',
      inputs: [{ shape: [65] }],
      run: ([x]) => dropout(x!, { p: 1, seed: 1 }),
      ref: ([x]) => ({ data: new Float64Array(x!.data.length), shape: x!.shape }),
      refGrad: ([x]) => [{ data: new Float64Array(x!.data.length), shape: x!.shape }],
    });
  });

  it('same seed + offset gives the same mask; another offset another mask', async () => {
    const n = 4099;
    const x = Tensor.from(Float32Array.from({ length: n }, (_, i) => 1 + (i % 5)));
    const a = await dropout(x, { p: 0.5, seed: 5, offset: 11 }).toArray();
    const b = await dropout(x, { p: 0.5, seed: 5, offset: 11 }).toArray();
    const c = await dropout(x, { p: 0.5, seed: 5, offset: 12 }).toArray();
    const d = await dropout(x, { p: 0.5, seed: 6, offset: 11 }).toArray();
    expect(Array.from(a)).toEqual(Array.from(b));
    // Two independent p=0.5 masks agree on ~50% of positions (sd 0.8%); identical masks agree on 100%.
    const agree = (u: Float32Array | Int32Array | Uint32Array, v: typeof u): number => u.filter((_, i) => (u[i] === 0) === (v[i] === 0)).length / n;
    expect(agree(a, c)).toBeLessThan(0.6);
    expect(agree(a, d)).toBeLessThan(0.6);
    x.dispose();
  });

  it('without a seed: the global generator, reproducible after manualSeed', async () => {
    const x = Tensor.from(new Float32Array(1000).fill(1));
    manualSeed(77);
    const before = rngState();
    const a = await dropout(x, { p: 0.3 }).toArray();
    const b = await dropout(x, { p: 0.3 }).toArray();
    expect(rngState().offset).toBe(before.offset + 2);
    // The first call used (seed 77, offset 0): the reference reproduces it.
    const keep = refDropoutMask(1000, 0.3, 77, before.offset);
    expect(Array.from(a, (v) => (v === 0 ? 0 : 1))).toEqual(Array.from(keep));
    expect(Array.from(a)).not.toEqual(Array.from(b));
    manualSeed(77);
    const a2 = await dropout(x, { p: 0.3 }).toArray();
    expect(Array.from(a2)).toEqual(Array.from(a));
    x.dispose();
  });

  it('training=false and p=0 are the identity: no kernel, a view, gradients pass through', async () => {
    const x = Tensor.from(Float32Array.from([1, -2, 3])).requireGrad();
    await sync();
    const before = rt().queue.stats.dispatches;
    const y1 = dropout(x, { p: 0.5, training: false });
    const y2 = dropout(x, { p: 0, seed: 3 });
    const y3 = noGrad(() => dropout(x, { p: 0.5, training: false }));
    expect(rt().queue.stats.dispatches).toBe(before);
    expect(y1).not.toBe(x);
    expect(Array.from(await y1.toArray())).toEqual([1, -2, 3]);
    expect(Array.from(await y2.toArray())).toEqual([1, -2, 3]);
    y3.dispose();
    expect(x.disposed).toBe(false);
    backward(y1, Tensor.from(Float32Array.from([4, 5, 6])));
    expect(Array.from(await x.grad!.toArray())).toEqual([4, 5, 6]);
    for (const t of [x.grad!, x, y1, y2]) t.dispose();
  });

  it('rejects p outside [0, 1]', () => {
    const x = Tensor.empty([2]);
    expect(() => dropout(x, { p: 1.5 })).toThrow(/p = 1.5/);
    expect(() => dropout(x, { p: -0.1 })).toThrow(/p = -0.1/);
    expect(() => dropout(x, { p: NaN })).toThrow(/p = NaN/);
    x.dispose();
  });

  it('keep rate and independence (statistical, 5 sigma)', async () => {
    const n = 1 << 18;
    const x = Tensor.from(new Float32Array(n).fill(1));
    for (const p of [0.1, 0.5, 0.8]) {
      for (const offset of [0, 1]) {
        const y = await dropout(x, { p, seed: 2024, offset }).toArray();
        const q = 1 - p;
        const kept = y.filter((v) => v !== 0);
        // Kept values are exactly the scale 1/(1-p) (in f32).
        expect(kept.every((v) => v === Math.fround(1 / q))).toBe(true);
        // Keep rate overall and in each quarter of the index range (the counter covers every position).
        for (const [lo, hi] of [[0, n], [0, n / 4], [n / 4, n / 2], [n / 2, (3 * n) / 4], [(3 * n) / 4, n]] as const) {
          const m = hi - lo;
          let k = 0;
          for (let i = lo; i < hi; i++) if (y[i] !== 0) k++;
          expect(Math.abs(k - m * q)).toBeLessThan(5 * Math.sqrt(m * p * q));
        }
        // Neighbours are independent: P(keep_i and keep_{i+1}) = q^2, and P(keep_i and keep_{i+64}) = q^2.
        for (const lag of [1, 64, 256]) {
          let both = 0;
          for (let i = 0; i + lag < n; i++) if (y[i] !== 0 && y[i + lag] !== 0) both++;
          const m = n - lag;
          expect(Math.abs(both - m * q * q)).toBeLessThan(5 * Math.sqrt(m * q * q * (1 - q * q)));
        }
      }
    }
    x.dispose();
  });
});
