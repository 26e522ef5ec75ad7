import { expect, it } from 'vitest';
import { full, manualSeed, ones, rand, randn, rngUniform, Tensor, truncatedNormal, vec4Count, zeros } from '../engine/index.js';
import { describeGpu } from './harness.js';

it('vec4Count: vec4s only for a multiple of 4 elements whose bindings all start on 16 bytes', () => {
  expect(vec4Count(8)).toBe(2);
  expect(vec4Count(1028, { byteOffset: 0 }, { byteOffset: 256 })).toBe(257);
  expect(vec4Count(6)).toBe(0);
  expect(vec4Count(0)).toBe(0);
  expect(vec4Count(8, { byteOffset: 0 }, { byteOffset: 4 })).toBe(0);
  expect(vec4Count(8, { byteOffset: 8 })).toBe(0);
});

describeGpu('tensor', () => {
  it('round-trips f32, i32 and u32 data with shapes', async () => {
    const f = Tensor.from(new Float32Array([1.5, -2, 3e30]), [3]);
    const i = Tensor.from(new Int32Array([-7, 0, 2147483647, -2147483648]), [2, 2]);
    const u = Tensor.from(new Uint32Array([0, 4294967295]));
    expect(f.dtype).toBe('f32');
    expect(i.dtype).toBe('i32');
    expect(u.dtype).toBe('u32');
    expect(Array.from(await f.toArray())).toEqual([1.5, -2, Math.fround(3e30)]);
    expect(Array.from(await i.toArray())).toEqual([-7, 0, 2147483647, -2147483648]);
    expect(Array.from(await u.toArray())).toEqual([0, 4294967295]);
    expect(i.shape).toEqual([2, 2]);
    expect(() => Tensor.from(new Float32Array(5), [2, 2])).toThrow(/5 values do not fill shape \[2, 2\]/);
    for (const t of [f, i, u]) t.dispose();
    await expect(f.toArray()).rejects.toThrow(/disposed/);
  });

  it('zeros, ones, full for every dtype', async () => {
    expect(Array.from(await zeros([3]).toArray())).toEqual([0, 0, 0]);
    expect(Array.from(await ones([2], 'i32').toArray())).toEqual([1, 1]);
    expect(Array.from(await full([257], 7, 'u32').toArray())).toEqual(new Array(257).fill(7));
  });

  it('the GPU RNG equals the TypeScript reference bit for bit, and the same seed gives the same numbers', async () => {
    const n = 1000;
    const a = await rand([n], 0, 1, { seed: 123, offset: 5 }).toArray();
    for (let i = 0; i < n; i++) expect(a[i]).toBe(rngUniform(123, 5, 2 * i));
    manualSeed(7);
    const x1 = await randn([n]).toArray();
    const x2 = await randn([n]).toArray();
    manualSeed(7);
    const y1 = await randn([n]).toArray();
    expect(Array.from(y1)).toEqual(Array.from(x1));
    expect(Array.from(x2)).not.toEqual(Array.from(x1));
  });

  it('normal and truncated normal have the right moments and bounds', async () => {
    const n = 200_003;
    const z = await randn([n], 2, 1, { seed: 9 }).toArray();
    let m = 0;
    let v = 0;
    for (const x of z) m += x;
    m /= n;
    for (const x of z) v += (x - m) ** 2;
    v /= n;
    expect(Math.abs(m - 1)).toBeLessThan(0.02); // 5 standard errors: 2/sqrt(n) = 0.0045
    expect(Math.abs(Math.sqrt(v) - 2)).toBeLessThan(0.02);
    const t = await truncatedNormal([n], 0.5, 0, { seed: 3 }).toArray();
    let maxAbs = 0;
    let s2 = 0;
    for (const x of t) {
      maxAbs = Math.max(maxAbs, Math.abs(x));
      s2 += x * x;
    }
    expect(maxAbs).toBeLessThanOrEqual(1.0 + 1e-6);
    // Std of a normal truncated at +-2 sigma is 0.8796 sigma.
    expect(Math.abs(Math.sqrt(s2 / n) - 0.5 * 0.8796)).toBeLessThan(0.005);
  });
});
