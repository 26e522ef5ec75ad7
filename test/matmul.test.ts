// test/matmul.test.ts — matmul forward and backward against the float64 reference: every transpose combination,
// batched and shared-operand forms, sizes from ODD_SIZES, an irregular large case, magnitudes of +-100, every
// variant (not only the default), the row-chunked path over the storage-binding cap, and the error messages.
import { expect, it } from 'vitest';
import { ref, rt, sync, Tensor } from '../engine/index.js';
import { linear, MATMUL_TUNING, MATMUL_VARIANTS, matmul, pickVariant, refMatmul, refMatmulGrad, type MatmulVariant } from '../kernels/matmul.js';
import { checkOp, describeGpu, expectClose, ODD_SIZES, type F64, type Tol } from './harness.js';

/** y = x Wᵀ + b in float64: x [..., K], w [N, K], b [N]. */
function refLinear(x: F64, w: F64, b: F64): F64 {
  const [N, K] = [w.shape[0]!, w.shape[1]!];
  const M = K ? x.data.length / K : 0;
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) {
    let s = b.data[n]!;
    for (let k = 0; k < K; k++) s += x.data[m * K + k]! * w.data[n * K + k]!;
    y[m * N + n] = s;
  }
  return { data: y, shape: [...x.shape.slice(0, -1), N] };
}

/** [dx, dw, db] of refLinear for gy. */
function refLinearGrad(x: F64, w: F64, gy: F64): [F64, F64, F64] {
  const [N, K] = [w.shape[0]!, w.shape[1]!];
  const M = K ? x.data.length / K : 0;
  const dx = new Float64Array(M * K);
  const dw = new Float64Array(N * K);
  const db = new Float64Array(N);
  for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) {
    const g = gy.data[m * N + n]!;
    db[n] = db[n]! + g;
    for (let k = 0; k < K; k++) {
      dx[m * K + k] = dx[m * K + k]! + g * w.data[n * K + k]!;
      dw[n * K + k] = dw[n * K + k]! + g * x.data[m * K + k]!;
    }
  }
  return [{ data: dx, shape: [...x.shape] }, { data: dw, shape: [N, K] }, { data: db, shape: [N] }];
}

const U = 2 ** -24; // f32 unit roundoff

/**
 * Tolerance for sums of L products of values bounded by magA and magB (forward: L = K; backward: L is the
 * longest of K, N and batch·M, the inner dims of the gradient products). f32 rounding of a dot product is
 * bounded by ~L·u·Σ|a||b| (Higham's γ_L), so the absolute tolerance grows with L and the magnitudes; a wrong
 * index or a missed edge gives errors of the size of the values themselves, far above it.
 */
function tolFor(L: number, magA: number, magB: number): Tol {
  return { atol: Math.max(1e-5, 4 * U * L * magA * magB), rtol: 1e-4 };
}

interface Case {
  a: number[];
  b: number[];
  tA?: boolean;
  tB?: boolean;
  variant?: MatmulVariant;
  range?: [number, number];
  seed?: number;
}

function run(c: Case): Promise<void> {
  const tA = c.tA ?? false;
  const tB = c.tB ?? false;
  const [lo, hi] = c.range ?? [-2, 2];
  const mag = Math.max(Math.abs(lo), Math.abs(hi));
  const M = tA ? c.a.at(-1)! : c.a.at(-2)!;
  const K = tA ? c.a.at(-2)! : c.a.at(-1)!;
  const N = tB ? c.b.at(-2)! : c.b.at(-1)!;
  const batch = Math.max(c.a.slice(0, -2).reduce((x, y) => x * y, 1), c.b.slice(0, -2).reduce((x, y) => x * y, 1));
  const opts = { transA: tA, transB: tB };
  return checkOp({
    name: `matmul${c.variant ? `.${c.variant}` : ''} [${c.a}]${tA ? 'ᵀ' : ''} x [${c.b}]${tB ? 'ᵀ' : ''}`,
    inputs: [
      { shape: c.a, range: [lo, hi] },
      { shape: c.b, range: [lo, hi] },
    ],
    run: ([a, b]) => matmul(a!, b!, { ...opts, variant: c.variant }),
    ref: ([a, b]) => refMatmul(a!, b!, opts),
    refGrad: ([a, b], gy) => refMatmulGrad(a!, b!, gy, opts),
    tol: tolFor(K, mag, mag),
    // gy is drawn from [-2, 2]: dA sums N products gy·b, dB sums batch·M products gy·a.
    gradTol: tolFor(Math.max(N, batch * M, 1), 2, mag),
    // Finite differences of a bilinear function are exact up to the rounding of the float64 sums, which grows
    // with the magnitudes: +-100 inputs (products ~1e4) get the gradcheck's atol scaled by mag².
    ...(mag > 2 ? { gradcheck: { atol: 1e-5 * mag * mag } } : {}),
    ...(c.seed !== undefined ? { seed: c.seed } : {}),
  });
}

const TRANS: Array<[boolean, boolean]> = [
  [false, false],
  [false, true],
  [true, false],
  [true, true],
];
const tag = (tA: boolean, tB: boolean): string => `${tA ? 't' : 'n'}${tB ? 't' : 'n'}`;
/** Operand shapes for op(a) [M, K] and op(b) [K, N], with optional batch prefixes. */
const shapesFor = (M: number, N: number, K: number, tA: boolean, tB: boolean, pa: number[] = [], pb: number[] = []) => ({
  a: [...pa, ...(tA ? [K, M] : [M, K])],
  b: [...pb, ...(tB ? [N, K] : [K, N])],
});

describeGpu('matmul', () => {
  // ---------------------------------------------------------------- default variant, sizes from ODD_SIZES
  const MNK: Array<[number, number, number]> = [
    [1, 1, 1],
    [2, 3, 7],
    [13, 31, 1],
    [7, 1, 13],
    [63, 64, 65],
    [65, 63, 64],
    [64, 65, 63],
    [1, 257, 31],
    [97, 2, 255],
    [3, 256, 257],
  ];
  it('the sizes below come from ODD_SIZES (1, primes, 63/64/65, 255/256/257)', () => {
    expect(MNK.flat().every((d) => (ODD_SIZES as readonly number[]).includes(d))).toBe(true);
  });
  for (const [tA, tB] of TRANS) {
    it(`2-D ${tag(tA, tB)} over ODD_SIZES`, async () => {
      for (const [M, N, K] of MNK) await run({ ...shapesFor(M, N, K, tA, tB), tA, tB });
    });
    it(`batched ${tag(tA, tB)}: [3] x [3], [2, 3] x [2, 3]`, async () => {
      await run({ ...shapesFor(13, 7, 5, tA, tB, [3], [3]), tA, tB });
      await run({ ...shapesFor(65, 64, 63, tA, tB, [2, 3], [2, 3]), tA, tB });
    });
    it(`shared weight ${tag(tA, tB)}: b 2-D, and a 2-D`, async () => {
      await run({ ...shapesFor(31, 13, 7, tA, tB, [2, 3], []), tA, tB }); // a [2, 3, ...], b shared
      await run({ ...shapesFor(64, 65, 64, tA, tB, [3], []), tA, tB });
      await run({ ...shapesFor(7, 31, 13, tA, tB, [], [3]), tA, tB }); // a shared, b [3, ...]
    });
  }

  it('irregular large 257x129x131, every transpose combination', async () => {
    for (const [tA, tB] of TRANS) await run({ ...shapesFor(257, 129, 131, tA, tB), tA, tB });
  });

  it('magnitudes +-100 (tolerance scaled with K and the magnitudes)', async () => {
    await run({ ...shapesFor(65, 63, 257, false, false), range: [-100, 100] });
    await run({ ...shapesFor(31, 64, 64, true, true, [3], [3]), tA: true, tB: true, range: [-100, 100] });
    await run({ ...shapesFor(64, 97, 13, false, true, [2], []), tB: true, range: [-100, 100] });
  });

  it('split-K (small output, long K): every transpose combination, batched, vec4 and scalar paths', async () => {
    for (const [tA, tB] of TRANS) {
      await run({ ...shapesFor(13, 11, 1031, tA, tB), tA, tB });
      await run({ ...shapesFor(16, 20, 1024, tA, tB, [2], tB ? [] : [2]), tA, tB });
    }
  });

  it('split-K runs as one matmul dispatch plus one reduction; a big output as one dispatch', async () => {
    const count = (a: number[], b: number[]): number => {
      const ta = Tensor.from(new Float32Array(a.reduce((x, y) => x * y, 1)), a);
      const tb = Tensor.from(new Float32Array(b.reduce((x, y) => x * y, 1)), b);
      const before = rt().queue.stats.dispatches;
      const y = matmul(ta, tb);
      const n = rt().queue.stats.dispatches - before;
      for (const t of [ta, tb, y]) t.dispose();
      return n;
    };
    expect(count([13, 1031], [1031, 11])).toBe(2);
    expect(count([64, 64], [64, 64])).toBe(1);
    await sync();
  });

  it('a 2-D b read as one or two uniform arrays (MATMUL_TUNING.uniformB) and from storage: all match the reference', async () => {
    const names: string[] = [];
    const prev = { tuning: MATMUL_TUNING.uniformB, hook: rt().queue.onDispatch };
    rt().queue.onDispatch = (name) => names.push(name);
    // The forward product's kernel (the first dispatch; the backward's products have other b operands).
    const forward = async (c: Case): Promise<string> => {
      names.length = 0;
      await run(c);
      return names.find((n) => n.startsWith('matmul_')) ?? '';
    };
    try {
      for (const on of [true, false]) {
        MATMUL_TUNING.uniformB = on;
        // vec4 b (N % 4 == 0 untransposed, K % 4 == 0 transposed): a weight b, a 2-D or batched a, odd M
        for (const [tA, tB] of TRANS) {
          const N = tB ? 65 : 64, K = tB ? 64 : 63;
          const used = await forward({ ...shapesFor(131, N, K, tA, tB, [2], []), tA, tB });
          expect(used.includes('uB='), `${tag(tA, tB)} uniformB ${on}: ${used}`).toBe(on);
          await run({ ...shapesFor(1, N, K, tA, tB), tA, tB, range: [-100, 100] });
        }
        // 64 KiB exactly (the binding limit) is read as a uniform array; past it, from storage
        expect((await forward({ a: [130, 128], b: [128, 128] })).includes('uB=4096')).toBe(on);
        // up to twice the limit, an untransposed b is read as two uniform arrays (rows [0, K0) and [K0, K)):
        // AttRec's 152 x 152 projection; K % 4 != 0 (the scalar A path's K tail reads the second array); split-K
        // slices that straddle K0; transposed, it stays in storage
        expect((await forward({ a: [131, 152], b: [152, 152] })).includes('uK0=104')).toBe(on);
        expect((await forward({ a: [2, 65, 153], b: [153, 152] })).includes('uK0=')).toBe(on);
        expect((await forward({ a: [129, 3001], b: [3001, 8] })).includes('uK0=2048')).toBe(on);
        expect(await forward({ a: [131, 152], b: [152, 152], tB: true })).not.toContain('uB=');
        expect(await forward({ a: [130, 260], b: [260, 128] })).not.toContain('uB=');
        // few rows of C (a weight gradient's activation operand): storage
        expect(await forward({ a: [127, 64], b: [64, 64] })).not.toContain('uB=');
        // the declared sizes are the buffer's pool size class: operands whose K changes from call to call (varlen
        // tokens) share one pipeline
        const k300 = await forward({ a: [130, 300], b: [300, 64] });
        expect(await forward({ a: [130, 316], b: [316, 64] })).toBe(k300);
        // the fused Linear (bias epilogue) with a uniform weight
        await checkOp({
          name: `linear uniformB ${on}`,
          inputs: [{ shape: [3, 43, 64], range: [-2, 2] }, { shape: [36, 64], range: [-1, 1] }, { shape: [36], range: [-1, 1] }],
          run: ([x, w, b]) => linear(x!, w!, b!),
          ref: ([x, w, b]) => refLinear(x!, w!, b!),
          refGrad: ([x, w], gy) => refLinearGrad(x!, w!, gy),
          tol: tolFor(64, 2, 1),
          gradTol: tolFor(129, 2, 2),
        });
      }
    } finally {
      MATMUL_TUNING.uniformB = prev.tuning;
      rt().queue.onDispatch = prev.hook;
    }
  });

  it('K = 0 gives zeros, M = 0 / N = 0 give empty outputs', async () => {
    await run({ a: [3, 0], b: [0, 4] });
    await run({ a: [0, 5], b: [5, 4] });
    await run({ a: [2, 3, 5], b: [5, 0] });
  });

  // ---------------------------------------------------------------- every variant
  // Per variant and transpose combination: one shape with every dim a multiple of 4 (the vec4 bindings) but
  // not of the tiles (edges in M and N), one with odd dims (scalar bindings, K % 4 != 0). Backward runs the
  // same variant.
  for (const variant of MATMUL_VARIANTS) {
    it(`variant ${variant}: all transposes, vec4 and scalar paths, batched`, async () => {
      for (const [tA, tB] of TRANS) {
        await run({ ...shapesFor(36, 40, 12, tA, tB), tA, tB, variant });
        await run({ ...shapesFor(13, 11, 7, tA, tB, [2], [2]), tA, tB, variant });
      }
    });
  }

  it('pickVariant: 8x8 for small per-batch outputs, 8x16 otherwise', () => {
    expect(pickVariant(50, 50)).toBe('reg8x8');
    expect(pickVariant(1, 1)).toBe('reg8x8');
    for (const [M, N] of [
      [12800, 64],
      [12800, 256],
      [5000, 12103],
      [64, 256],
    ] as const) {
      expect(pickVariant(M, N)).toBe('reg8x16');
    }
  });

  // ---------------------------------------------------------------- over the storage-binding cap
  const maxBind = () => rt().device.limits.maxStorageBufferBindingSize;
  it('an output over maxStorageBufferBindingSize is computed in row chunks', async (ctx) => {
    const cap = maxBind();
    // A real GPU may allow gigabytes per binding: only exercise the split where it stays affordable.
    if (cap > 256 * 2 ** 20) ctx.skip();
    const N = 4099;
    const K = 3;
    const M = Math.ceil(cap / 4 / N) + 37; // c is just over the cap, and M is not a multiple of the chunk
    const rnd = ref.mulberry32(5);
    const ah = Float32Array.from({ length: M * K }, () => rnd() * 2 - 1);
    const bh = Float32Array.from({ length: N * K }, () => rnd() * 2 - 1);
    const a = Tensor.from(ah, [M, K]);
    const b = Tensor.from(bh, [N, K]);
    const y = matmul(a, b, { transB: true }); // [M, N]
    expect(y.byteLength).toBeGreaterThan(cap);
    const got = await y.toArray();
    // Every 29th row and the last 64 (a chunk is >= 256 rows, so every chunk is sampled), against float64.
    const rows = [...Array(M).keys()].filter((r) => r % 29 === 0 || r >= M - 64);
    const want = new Float64Array(rows.length * N);
    const gotRows = new Float32Array(rows.length * N);
    rows.forEach((r, q) => {
      for (let j = 0; j < N; j++) {
        let acc = 0;
        for (let k = 0; k < K; k++) acc += ah[r * K + k]! * bh[j * K + k]!;
        want[q * N + j] = acc;
      }
      gotRows.set(got.subarray(r * N, (r + 1) * N), q * N);
    });
    expectClose('matmul row chunks', gotRows, want, tolFor(K, 1, 1));
    for (const t of [a, b, y]) t.dispose();
    await sync();
  });

  it('linear (x Wᵀ + b, the bias fused into the store): 2-D and 3-D x, odd sizes, and the gradients of all three', async () => {
    for (const [xs, N] of [[[1, 1], 1], [[13, 7], 5], [[2, 3, 64], 65], [[65, 31], 64]] as Array<[number[], number]>) {
      const K = xs[xs.length - 1]!;
      const M = xs.slice(0, -1).reduce((a, b) => a * b, 1);
      await checkOp({
        name: `linear [${xs}] x [${N}, ${K}]ᵀ + b`,
        inputs: [{ shape: xs }, { shape: [N, K] }, { shape: [N] }],
        run: ([x, w, b]) => linear(x!, w!, b!),
        ref: ([x, w, b]) => refLinear(x!, w!, b!),
        refGrad: ([x, w], gy) => refLinearGrad(x!, w!, gy),
        tol: tolFor(K, 2, 2),
        gradTol: tolFor(Math.max(N, M, 1), 2, 2),
      });
    }
  });

  it('linear backward with the bias gradient fused into the weight-gradient product (MATMUL_TUNING.fuseBiasGrad): equal to the reference, on and off', async () => {
    const names: string[] = [];
    const prev = { fuse: MATMUL_TUNING.fuseBiasGrad, hook: rt().queue.onDispatch };
    rt().queue.onDispatch = (name) => names.push(name);
    try {
      // rows: 1, a prime, 63/64/65 (a workgroup +-1), 601 and 1031 (split-K; 1031 % 4 != 0: the K tail); out and in
      // multiples of 4 (vec4 dY and dW), out not a multiple of the 8-row tile (12), 256 x 64 (the FFN's shapes)
      const cases: Array<[number[], number, [number, number]?]> = [
        [[1, 8], 4, [-1, 1]], [[7, 12], 12], [[63, 64], 64], [[64, 64], 64], [[65, 64], 256], [[601, 256], 16],
        [[3, 7, 20], 12], [[1031, 16], 8], [[257, 16], 8, [-100, 100]],
      ];
      for (const fuse of [true, false]) {
        MATMUL_TUNING.fuseBiasGrad = fuse;
        for (const [xs, N, range] of cases) {
          const K = xs[xs.length - 1]!;
          const M = xs.slice(0, -1).reduce((a, b) => a * b, 1);
          const mag = range ? range[1] : 1;
          names.length = 0;
          await checkOp({
            name: `linear [${xs}] x [${N}, ${K}]ᵀ + b, fuseBiasGrad ${fuse}`,
            inputs: [{ shape: xs, range }, { shape: [N, K], range }, { shape: [N], range }],
            run: ([x, w, b]) => linear(x!, w!, b!),
            ref: ([x, w, b]) => refLinear(x!, w!, b!),
            refGrad: ([x, w], gy) => refLinearGrad(x!, w!, gy),
            tol: tolFor(K, mag, mag),
            gradTol: tolFor(Math.max(N, M, 1), 2 * mag, 2 * mag),
          });
          expect(names.some((n) => n.includes('sumA')), `${xs} x ${N}: ${names.join(' ')}`).toBe(fuse);
        }
      }
      // the bias gradient's reduction is gone: one product (+ its split-K sum) for dW and db together
      MATMUL_TUNING.fuseBiasGrad = true;
      names.length = 0;
      await checkOp({
        name: 'linear [601, 64] x [64, 64]ᵀ + b, dispatches',
        inputs: [{ shape: [601, 64] }, { shape: [64, 64] }, { shape: [64] }],
        run: ([x, w, b]) => linear(x!, w!, b!),
        ref: ([x, w, b]) => refLinear(x!, w!, b!),
        refGrad: ([x, w], gy) => refLinearGrad(x!, w!, gy),
        tol: tolFor(64, 1, 1),
        gradTol: tolFor(601, 2, 2),
      });
      const reduces = names.filter((n) => n.startsWith('reduce_')).length;
      const products = names.filter((n) => n.startsWith('matmul_') && n.includes('tA')).length;
      expect({ reduces, products }).toEqual({ reduces: 1, products: 1 });
    } finally {
      MATMUL_TUNING.fuseBiasGrad = prev.fuse;
      rt().queue.onDispatch = prev.hook;
    }
  });

  it('errors name the shapes', () => {
    const a = Tensor.empty([2, 3]);
    const b = Tensor.empty([4, 5]);
    const c = Tensor.empty([2, 3, 4]);
    const d = Tensor.empty([3, 4, 5]);
    expect(() => matmul(a, b)).toThrow(/inner dims differ \(3 vs 4\)/);
    expect(() => matmul(c, d)).toThrow(/batch dims must be equal/);
    expect(() => matmul(Tensor.empty([3]), b)).toThrow(/at least 2 dims/);
    for (const t of [a, b, c, d]) t.dispose();
  });
});
