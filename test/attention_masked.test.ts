// attention_masked (padded) and its varlen form against the float64 reference:
// forward, GPU backward vs reference backward, reference backward vs finite differences; nasty cases first
// (L = 1, fully padded rows, all keys masked, prime B, chunk boundary L = 64/65, +-1000 magnitudes, dropout,
// AttRec's shared q = k with the zeroed diagonal), and varlen == padded on the real positions.
import { describe, expect, it } from 'vitest';
import { backward, flags, noGrad, ref, reshape, sync, Tensor } from '../engine/index.js';
import {
  attentionMasked,
  attentionRowsPerThread,
  attentionVarlen,
  attentionWgsl,
  refAttentionMasked,
  refAttentionMaskedGrad,
  refAttentionVarlen,
  refAttentionVarlenGrad,
  type AttentionOptions,
} from '../kernels/attention_masked.js';
import { packBatch, packRows, planPack, refInjectiveGather } from '../kernels/varlen.js';
import { checkOp, describeGpu, expectClose, upload, type F64 } from './harness.js';
import { leftPadded } from './ids.js';

interface Case {
  name: string;
  B: number;
  H: number;
  L: number;
  D: number;
  /** Real tokens per sequence (left padded); null = no ids (no padding mask). */
  lens: number[] | null;
  opts: AttentionOptions;
  range?: { q?: [number, number]; k?: [number, number]; v?: [number, number] };
  gradcheck?: false | { eps: number };
  tol?: { atol: number; rtol: number };
  gradTol?: { atol: number; rtol: number };
}

function padded(c: Case): Promise<void> {
  const shape = [c.B, c.H, c.L, c.D];
  const ids = c.lens ? leftPadded(c.lens, c.L) : null;
  const ro = { ...c.opts, dropout: c.opts.dropout ?? 0 };
  return checkOp({
    name: `attention_masked ${c.name}`,
    inputs: [
      { shape, range: c.range?.q },
      { shape, range: c.range?.k },
      { shape, range: c.range?.v },
      ...(ids ? [{ shape: [c.B, c.L], dtype: 'u32' as const, values: ids }] : []),
    ],
    run: ([q, k, v, idsT]) => attentionMasked(q!, k!, v!, idsT ?? null, c.opts),
    ref: ([q, k, v, idsF]) => refAttentionMasked(q!, k!, v!, idsF ?? null, ro),
    refGrad: ([q, k, v, idsF], gy) => [...refAttentionMaskedGrad(q!, k!, v!, idsF ?? null, gy, ro), ...(ids ? [null] : [])],
    ...(c.gradcheck !== undefined ? { gradcheck: c.gradcheck } : {}),
    ...(c.tol ? { tol: c.tol } : {}),
    ...(c.gradTol ? { gradTol: c.gradTol } : {}),
  });
}

const FT = { causal: true, fill: -10000 }; // fine-tuning mask
const PT = { causal: false, fill: -1e8 }; // pretraining mask

describeGpu('attention_masked', () => {
  const cases: Case[] = [
    { name: 'finetune B3 H2 L7 D8, a fully padded row', B: 3, H: 2, L: 7, D: 8, lens: [7, 3, 0], opts: FT },
    { name: 'L=1 causal, one padded sequence', B: 5, H: 1, L: 1, D: 4, lens: [1, 0, 1, 1, 0], opts: FT },
    { name: 'L=1 bidirectional, no ids', B: 2, H: 3, L: 1, D: 3, lens: null, opts: {} },
    { name: 'prime B7 H3 L13 D12 causal', B: 7, H: 3, L: 13, D: 12, lens: [13, 1, 5, 0, 12, 2, 7], opts: FT },
    { name: 'scalar path D5 (D % 4 != 0) causal', B: 3, H: 2, L: 11, D: 5, lens: [11, 4, 1], opts: FT },
    { name: 'no ids, causal, D1', B: 2, H: 2, L: 9, D: 1, lens: null, opts: { causal: true } },
    // pretraining: padding-only, bidirectional, fill -1e8 (the all-padded sequence: every key masked)
    // f64's s + (-1e8) carries only ~1.5e-8 of the score, which finite differences (eps 1e-6) cannot resolve:
    // the reference backward is checked by finite differences in the -1e4 cases; here only GPU vs reference.
    { name: 'pretrain fill -1e8, bidirectional, all-pad sequence', B: 3, H: 2, L: 10, D: 8, lens: [10, 4, 0], opts: PT, gradcheck: false },
    { name: 'bidirectional fill -1e4, all-pad sequence', B: 2, H: 2, L: 6, D: 4, lens: [0, 3], opts: { fill: -10000 } },
    { name: 'S3-Rec shape L50 D32 causal', B: 3, H: 2, L: 50, D: 32, lens: [50, 9, 1], opts: FT },
    { name: 'chunk boundary L64', B: 2, H: 1, L: 64, D: 4, lens: [64, 30], opts: FT },
    { name: 'two chunks L65 bidirectional', B: 2, H: 1, L: 65, D: 4, lens: [65, 2], opts: { fill: -10000 } },
    { name: 'three chunks L131 causal', B: 1, H: 1, L: 131, D: 8, lens: [120], opts: FT },
    // +-1000 magnitudes: q +-1000 against small keys (scores ~ +-10 .. +-100: peaked softmax rows)
    { name: 'magnitudes q +-1000', B: 2, H: 2, L: 9, D: 8, lens: [9, 4], opts: FT, range: { q: [-1000, 1000], k: [-0.02, 0.02] } },
    // v +-1000: outputs and dq, dk ~1e3; f = <out, gy> ~ 1e5, whose f64 round-off swamps eps = 1e-6 finite
    // differences of q and k, so only GPU vs reference here (the reference backward is FD-checked above)
    { name: 'magnitudes v +-1000', B: 2, H: 2, L: 9, D: 8, lens: [9, 4], opts: FT, range: { v: [-1000, 1000] }, gradcheck: false },
    // scores of +-1e4: the additive mask no longer masks (the official code's behaviour, kept exactly)
    // f32 scores of ~1e4 carry ~1e-3 absolute error, so exp() of them ~1e-3 relative: tolerance loosened
    { name: 'scores ~1e4: additive mask leaks as in the official code', B: 1, H: 2, L: 6, D: 4, lens: [6], opts: { causal: true, fill: -100 },
      range: { q: [-10, 10], k: [-10, 10] }, tol: { atol: 1e-4, rtol: 1e-3 }, gradTol: { atol: 1e-3, rtol: 1e-2 } },
    { name: 'dropout 0.3 seeded, causal', B: 3, H: 2, L: 12, D: 8, lens: [12, 5, 0], opts: { ...FT, dropout: 0.3, seed: 7, offset: 3 } },
    { name: 'dropout 0.5 seeded, bidirectional -1e8', B: 2, H: 2, L: 50, D: 32, lens: [50, 7], opts: { ...PT, dropout: 0.5, seed: 42, offset: 0 }, gradcheck: false },
    { name: 'dropout p=1 drops everything', B: 1, H: 1, L: 4, D: 4, lens: [4], opts: { ...FT, dropout: 1, seed: 1 } },
    { name: 'variant storeScores: z saved by the forward, dropout', B: 3, H: 2, L: 12, D: 8, lens: [12, 5, 0], opts: { ...FT, dropout: 0.3, seed: 2, storeScores: true } },
    { name: 'irregular large B37 H2 L50 D32 causal', B: 37, H: 2, L: 50, D: 32, lens: Array.from({ length: 37 }, (_, b) => (b * 7) % 51), opts: FT },
  ];
  for (const c of cases) it(c.name, () => padded(c));

  // llvmpipe's loop budget (65,535 iterations per invocation, all loops together): at D = 150 every key costs a
  // thread ~760 iterations of its d loops, so L = 100 keys pass it and the key loop is split over dispatches.
  it('D150 L100 bidirectional: the key loop past the loop budget is chunked (state carried between dispatches)', () =>
    padded({ name: 'D150 L100 bidirectional', B: 2, H: 1, L: 100, D: 150, lens: [100, 61], opts: { fill: -10000 } }));
  it('forced small loop budgets (LOOP_BUDGET=100 / 300): chunked keys at D32 and D40, padded', async () => {
    const prev = flags.loopBudget;
    flags.loopBudget = 100;
    try {
      await padded({ name: 'budget 100 L50 D32', B: 2, H: 2, L: 50, D: 32, lens: [50, 9], opts: FT });
      flags.loopBudget = 300; // D40 loops over d: ~60 iterations per key
      await padded({ name: 'budget 300 L13 D40 dropout', B: 2, H: 1, L: 13, D: 40, lens: [13, 6], opts: { ...PT, fill: -10000, dropout: 0.3, seed: 5 } });
    } finally {
      flags.loopBudget = prev;
    }
  });

  it('AttRec: q = k shared tensor, zeroed diagonal (D150 scalar path, D12 vec4 path)', async () => {
    for (const D of [150, 12]) {
      const shape = [3, 1, 5, D];
      const o = { zeroDiagonal: true };
      await checkOp({
        name: `attention_masked attrec D${D}`,
        inputs: [{ shape, range: [-0.5, 1] }, { shape }],
        run: ([x, v]) => attentionMasked(x!, x!, v!, null, o),
        ref: ([x, v]) => refAttentionMasked(x!, x!, v!, null, o),
        refGrad: ([x, v], gy) => {
          const [dq, dk, dv] = refAttentionMaskedGrad(x!, x!, v!, null, gy, o);
          return [{ data: dq.data.map((g, i) => g + dk.data[i]!), shape: dq.shape }, dv];
        },
      });
    }
  });

  it('upstream gradient zero on pad rows (dead rows are skipped), padded and varlen', async () => {
    const [B, H, L, D] = [4, 2, 9, 8];
    const lens = [9, 3, 0, 6];
    const ids = leftPadded(lens, L);
    const rnd = ref.mulberry32(21);
    const mk = (): F64 => ({ data: Float64Array.from({ length: B * H * L * D }, () => Math.fround(rnd() * 4 - 2)), shape: [B, H, L, D] });
    const [q, k, v, gy] = [mk(), mk(), mk(), mk()];
    // zero upstream gradient on pad rows, and on one real row (b 0, slot 4) too
    for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let s = 0; s < L; s++) {
      if (ids[b * L + s] === 0 || (b === 0 && s === 4)) gy.data.fill(0, ((b * H + h) * L + s) * D, ((b * H + h) * L + s + 1) * D);
    }
    const idsF = { data: Float64Array.from(ids), shape: [B, L] };
    for (const o of [FT, PT, { ...FT, dropout: 0.5, seed: 4 }] as AttentionOptions[]) {
      const ro = { ...o, dropout: o.dropout ?? 0 };
      const want = refAttentionMaskedGrad(q, k, v, idsF, gy, ro);
      const ts = [upload(q).requireGrad(), upload(k).requireGrad(), upload(v).requireGrad()];
      const idsT = upload(idsF, 'u32');
      const y = attentionMasked(ts[0]!, ts[1]!, ts[2]!, idsT, o);
      backward(y, upload(gy));
      for (let i = 0; i < 3; i++) expectClose(`dead rows ${JSON.stringify(o)} grad ${i}`, await ts[i]!.grad!.toArray(), want[i]!.data, { atol: 1e-4, rtol: 1e-3 });
      for (const t of [...ts, idsT, y]) {
        t.grad?.dispose();
        t.dispose();
      }
    }
  });

  it('fully masked rows are finite, and equal softmax over the raw scores (both fills)', async () => {
    const [B, H, L, D] = [1, 2, 5, 4];
    const rnd = ref.mulberry32(5);
    const mk = (): F64 => ({ data: Float64Array.from({ length: B * H * L * D }, () => Math.fround(rnd() * 4 - 2)), shape: [B, H, L, D] });
    const [q, k, v] = [mk(), mk(), mk()];
    const ids: F64 = { data: new Float64Array(B * L), shape: [B, L] }; // all padding
    const want = refAttentionMasked(q, k, v, null, {}); // unmasked softmax
    for (const fill of [-10000, -1e8]) {
      for (const causal of [false, true]) {
        const out = noGrad(() => attentionMasked(upload(q), upload(k), upload(v), upload(ids, 'u32'), { fill, causal }));
        const got = await out.toArray();
        expect(got.every(Number.isFinite)).toBe(true);
        expectClose(`all-masked fill ${fill} causal ${causal}`, got, want.data, { atol: 1e-5, rtol: 1e-4 });
        out.dispose();
      }
    }
  });

  it('dropout: same seed -> same output, other offset -> other mask; i32 ids == u32 ids', async () => {
    const shape = [2, 2, 8, 4];
    const rnd = ref.mulberry32(9);
    const mk = (): Tensor => Tensor.from(Float32Array.from({ length: 128 }, () => rnd() * 2 - 1), shape);
    const [q, k, v] = [mk(), mk(), mk()];
    const ids = leftPadded([8, 5], 8);
    const idsU = Tensor.from(Uint32Array.from(ids), [2, 8], 'u32');
    const idsI = Tensor.from(Int32Array.from(ids), [2, 8], 'i32');
    const run = (o: AttentionOptions, idsT = idsU): Promise<Float32Array> =>
      noGrad(() => attentionMasked(q, k, v, idsT, { ...FT, dropout: 0.5, ...o })).toArray() as Promise<Float32Array>;
    const a = await run({ seed: 3, offset: 1 });
    const b = await run({ seed: 3, offset: 1 });
    const c = await run({ seed: 3, offset: 2 });
    const d = await run({ seed: 3, offset: 1 }, idsI);
    expect(Array.from(b)).toEqual(Array.from(a));
    expect(Array.from(d)).toEqual(Array.from(a));
    expect(Array.from(c)).not.toEqual(Array.from(a));
    const e = await run({ training: false });
    const f = await run({ dropout: 0 });
    expect(Array.from(e)).toEqual(Array.from(f));
    for (const t of [q, k, v, idsU, idsI]) t.dispose();
  });

  it('rows per thread: 4 while a row fits in 8 vector slots, else 1; a forced R gives the same results', async () => {
    expect([6, 32, 33, 64, 150].map(attentionRowsPerThread)).toEqual([4, 4, 1, 1, 1]);
    await padded({ name: 'rowsPerThread 1 at D32', B: 3, H: 2, L: 9, D: 32, lens: [9, 4, 1], opts: { ...FT, rowsPerThread: 1 } });
  });

  it('the WGSL bakes D and uses vec4 loads only when D % 4 == 0', () => {
    expect(attentionWgsl('padded', 'fwd', 32)).toContain('array<vec4<f32>, 8>');
    expect(attentionWgsl('padded', 'fwd', 6)).toContain('array<f32, 6>');
    expect(attentionWgsl('varlen', 'bwd_kv', 32)).toContain('seq_of');
  });

  // ---------------------------------------------------------------- varlen (packed real tokens)
  describe('varlen', () => {
    const vcase = (name: string, lens: number[], L: number, H: number, D: number, opts: AttentionOptions) =>
      it(name, () => {
        const T = lens.reduce((a, b) => a + b, 0);
        const plan = planPack(leftPadded(lens, L), lens.length, L);
        const pb = packBatch(leftPadded(lens, L), lens.length, L);
        const shape = [T, H, D];
        const ro = { ...opts };
        return checkOp({
          name: `attention_varlen ${name}`,
          inputs: [{ shape }, { shape }, { shape }],
          run: ([q, k, v]) => attentionVarlen(q!, k!, v!, pb, opts),
          ref: ([q, k, v]) => refAttentionVarlen(q!, k!, v!, Array.from(plan.lengths), L, ro),
          refGrad: ([q, k, v], gy) => refAttentionVarlenGrad(q!, k!, v!, Array.from(plan.lengths), L, gy, ro),
        }).finally(() => pb.dispose());
      });
    vcase('causal, lengths 1..L and an empty sequence', [7, 1, 0, 3, 7], 7, 2, 8, FT);
    vcase('bidirectional D5 scalar path', [4, 2, 5], 5, 3, 5, { fill: -1e8 });
    vcase('S3-Rec lengths, L50 D32 causal', [50, 9, 2, 1, 17], 50, 2, 32, FT);
    vcase('dropout 0.5 seeded (same mask as the padded run)', [6, 3, 1], 6, 2, 4, { ...FT, dropout: 0.5, seed: 11, offset: 4 });
    vcase('two chunks L80 bidirectional', [80, 70], 80, 1, 4, { fill: -10000 });
    vcase('D150 L100 bidirectional (key loop past the loop budget: chunked)', [100, 37], 100, 1, 150, { fill: -10000 });
    it('a forced small loop budget (LOOP_BUDGET=60): chunked keys, varlen', async () => {
      const prev = flags.loopBudget;
      flags.loopBudget = 60;
      try {
        const lens = [50, 9, 2, 0, 17];
        const L = 50;
        const T = lens.reduce((a, b) => a + b, 0);
        const plan = planPack(leftPadded(lens, L), lens.length, L);
        const pb = packBatch(leftPadded(lens, L), lens.length, L);
        await checkOp({
          name: 'attention_varlen budget 60',
          inputs: [{ shape: [T, 2, 32] }, { shape: [T, 2, 32] }, { shape: [T, 2, 32] }],
          run: ([q, k, v]) => attentionVarlen(q!, k!, v!, pb, FT),
          ref: ([q, k, v]) => refAttentionVarlen(q!, k!, v!, Array.from(plan.lengths), L, FT),
          refGrad: ([q, k, v], gy) => refAttentionVarlenGrad(q!, k!, v!, Array.from(plan.lengths), L, gy, FT),
        }).finally(() => pb.dispose());
      } finally {
        flags.loopBudget = prev;
      }
    });

    it('varlen == padded on the real positions (forward and grads), fine-tuning and pretraining masks, dropout', async () => {
      const [B, L, H, D] = [5, 12, 2, 8];
      const lens = [12, 1, 6, 0, 9];
      const ids = leftPadded(lens, L, 3);
      const pb = packBatch(ids, B, L);
      const rnd = ref.mulberry32(77);
      const mk = (): Tensor => Tensor.from(Float32Array.from({ length: B * L * H * D }, () => rnd() * 4 - 2), [B, L, H * D]); // [B, L, H*D]
      for (const opts of [FT, PT, { ...FT, dropout: 0.4, seed: 5, offset: 9 }, { ...PT, dropout: 0.4, seed: 5, offset: 9 }] as AttentionOptions[]) {
        const [xq, xk, xv] = [mk().requireGrad(), mk().requireGrad(), mk().requireGrad()];
        const gyT = mk(); // [B, L, H*D] upstream gradient (pad rows ignored)
        // padded: [B, L, H, D] -> [B, H, L, D] on the host (transpose kernels live elsewhere)
        const host = async (t: Tensor): Promise<Float32Array> => (await t.toArray()) as Float32Array;
        const toBHLD = (a: Float32Array): Float32Array => {
          const o = new Float32Array(a.length);
          for (let b = 0; b < B; b++) for (let s = 0; s < L; s++) for (let h = 0; h < H; h++) for (let d = 0; d < D; d++) o[((b * H + h) * L + s) * D + d] = a[((b * L + s) * H + h) * D + d]!;
          return o;
        };
        const fromBHLD = (a: ArrayLike<number>): Float32Array => {
          const o = new Float32Array(a.length);
          for (let b = 0; b < B; b++) for (let s = 0; s < L; s++) for (let h = 0; h < H; h++) for (let d = 0; d < D; d++) o[((b * L + s) * H + h) * D + d] = a[((b * H + h) * L + s) * D + d]!;
          return o;
        };
        const pq = Tensor.from(toBHLD(await host(xq)), [B, H, L, D]).requireGrad();
        const pk = Tensor.from(toBHLD(await host(xk)), [B, H, L, D]).requireGrad();
        const pv = Tensor.from(toBHLD(await host(xv)), [B, H, L, D]).requireGrad();
        const idsT = Tensor.from(Uint32Array.from(ids), [B, L], 'u32');
        const po = attentionMasked(pq, pk, pv, idsT, opts); // [B, H, L, D]
        // the loss reads real positions only: pad rows get no upstream gradient (as in the model, where every
        // op after attention is per-token), else the padded run's fully masked pad rows would send gradient to
        // real keys that the varlen run does not have
        const gyPad = await host(gyT);
        for (let r = 0; r < B * L; r++) if (pb.plan.tokenOf[r] === -1) gyPad.fill(0, r * H * D, (r + 1) * H * D);
        backward(po, Tensor.from(toBHLD(gyPad), [B, H, L, D]));
        // varlen: pack [B, L, H*D] -> [T, H*D] = [T, H, D]
        const vq = reshape(packRows(xq, pb), [pb.T, H, D]); // [T, H, D]
        const vk = reshape(packRows(xk, pb), [pb.T, H, D]);
        const vv = reshape(packRows(xv, pb), [pb.T, H, D]);
        const vo = attentionVarlen(vq, vk, vv, pb, opts); // [T, H, D]
        const gyPacked = refInjectiveGather({ data: Float64Array.from(gyPad), shape: [B * L, H * D] }, pb.plan.padIndex, [pb.T, H, D]);
        backward(vo, upload(gyPacked));
        // compare on real rows: padded output rows at padIndex vs varlen rows
        const real = (a: Float32Array): Float64Array =>
          refInjectiveGather({ data: Float64Array.from(a), shape: [B * L, H * D] }, pb.plan.padIndex, [pb.T, H * D]).data;
        const tol = { atol: 1e-5, rtol: 1e-4 };
        expectClose(`varlen fwd ${JSON.stringify(opts)}`, await vo.toArray(), real(fromBHLD(await po.toArray())), tol);
        // gradients: the varlen path's packRows backward scatters into [B, L, H*D] (zeros on pads)
        const gradTol = { atol: 1e-4, rtol: 1e-3 };
        for (const [name, x, p] of [['q', xq, pq], ['k', xk, pk], ['v', xv, pv]] as const) {
          const gv = (await x.grad!.toArray()) as Float32Array;
          const gp = fromBHLD(await p.grad!.toArray());
          expectClose(`varlen d${name} real rows ${JSON.stringify(opts)}`, real(gv), real(gp), gradTol);
          // pad rows of the varlen gradient are exactly 0
          for (let r = 0; r < B * L; r++) if (pb.plan.tokenOf[r] === -1) for (let c = 0; c < H * D; c++) expect(gv[r * H * D + c]).toBe(0);
        }
        for (const t of [xq, xk, xv, pq, pk, pv]) t.grad?.dispose();
        for (const t of [xq, xk, xv, gyT, pq, pk, pv, idsT, po, vq, vk, vv, vo]) t.dispose();
      }
      pb.dispose();
      await sync();
    });

    it('an all-padding batch packs to T = 0 tokens and attends to nothing', async () => {
      const pb = packBatch([0, 0, 0, 0, 0, 0], 2, 3);
      expect(pb.T).toBe(0);
      const z = Tensor.empty([0, 2, 4]); // [T = 0, H, D]
      const out = noGrad(() => attentionVarlen(z, z, z, pb, FT));
      expect(out.shape).toEqual([0, 2, 4]);
      for (const t of [out, z]) t.dispose();
      pb.dispose();
    });
  });
});
