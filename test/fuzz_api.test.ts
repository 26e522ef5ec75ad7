// Fuzz of the public API with bad calls (seeded): every kernels/index.ts op, Tensor.from and the nn modules get
// random wrong shapes, dtypes, ranks, axes, option values, disposed inputs and out-of-range ids. Each call must
// throw an Error whose message names the op (synchronously, or at the next readback for ids checked on the GPU),
// and after every bad call the engine must still compute a right answer.
import { expect, it } from 'vitest';
import { ref, sync, Tensor, type DType } from '../engine/index.js';
import * as F from '../kernels/index.js';
import { Embedding, LayerNorm, Linear } from '../models/nn.js';
import { describeGpu } from './harness.js';

type Rnd = () => number;

function seedOf(name: string): number {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return h >>> 0;
}

const int = (rnd: Rnd, lo: number, hi: number): number => lo + Math.floor(rnd() * (hi - lo + 1));
const pick = <T,>(rnd: Rnd, xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;

function T(rnd: Rnd, shape: number[], dtype: DType = 'f32', hi = 3): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  if (dtype === 'f32') return Tensor.from(Float32Array.from({ length: n }, () => rnd() * 2 - 1), shape);
  const a = Int32Array.from({ length: n }, () => int(rnd, 0, hi));
  return dtype === 'i32' ? Tensor.from(a, shape, 'i32') : Tensor.from(Uint32Array.from(a), shape, 'u32');
}

function disposed(t: Tensor): Tensor {
  t.dispose();
  return t;
}

/** A bad call of one op: `op` is a regex the message must match (the op's name as the library spells it). */
interface BadCall {
  op: RegExp;
  what: string;
  call: () => unknown;
}

type Gen = (rnd: Rnd) => BadCall;

const NOT_F32: DType[] = ['i32', 'u32'];

const GENS: Gen[] = [
  // elementwise binary: shapes that do not broadcast, non-f32 operands, disposed operands
  (r) => {
    const name = pick(r, ['add', 'sub', 'mul', 'div'] as const);
    const m = int(r, 2, 5);
    const n = int(r, 2, 5);
    const v = int(r, 0, 2);
    const a = T(r, [m, n]);
    const b = v === 0 ? T(r, [m, n + 1]) : v === 1 ? T(r, [m, n], pick(r, NOT_F32)) : disposed(T(r, [m, n]));
    return { op: new RegExp(`\\b${name}\\b`), what: `${name} ${a.describe()} ${b.describe()}`, call: () => F[name](a, b) };
  },
  // unary on ints / disposed
  (r) => {
    const name = pick(r, ['neg', 'exp', 'log', 'sqrt', 'relu', 'sigmoid', 'tanh', 'gelu', 'square', 'abs'] as const);
    const x = r() < 0.5 ? T(r, [int(r, 1, 9)], pick(r, NOT_F32)) : disposed(T(r, [3]));
    return { op: new RegExp(`\\b${name}\\b`), what: `${name} ${x.describe()}`, call: () => F[name](x) };
  },
  // reductions: axis out of range / non-integer, ints
  (r) => {
    const name = pick(r, ['sum', 'mean', 'max'] as const);
    const shape = [int(r, 1, 4), int(r, 1, 4)];
    const v = int(r, 0, 2);
    const x = v === 2 ? T(r, shape, 'i32') : T(r, shape);
    const axis = v === 0 ? pick(r, [2, 3, -3, 7]) : v === 1 ? 0.5 : 0;
    return { op: new RegExp(`\\b${name}\\b`), what: `${name} ${x.describe()} axis ${axis}`, call: () => F[name](x, axis) };
  },
  // matmul / linear: inner dims, ranks, dtypes
  (r) => {
    const [m, k, n] = [int(r, 1, 6), int(r, 2, 6), int(r, 1, 6)];
    const v = int(r, 0, 4);
    if (v === 0) return { op: /matmul/, what: 'matmul inner mismatch', call: () => F.matmul(T(r, [m, k]), T(r, [k + 1, n])) };
    if (v === 1) return { op: /matmul/, what: 'matmul 1-D', call: () => F.matmul(T(r, [k]), T(r, [k, n])) };
    if (v === 2) return { op: /matmul/, what: 'matmul i32', call: () => F.matmul(T(r, [m, k], 'i32'), T(r, [k, n])) };
    if (v === 3) return { op: /linear/, what: 'linear in mismatch', call: () => F.linear(T(r, [m, k]), T(r, [n, k + 1]), T(r, [n])) };
    return { op: /linear/, what: 'linear bias mismatch', call: () => F.linear(T(r, [m, k]), T(r, [n, k]), T(r, [n + 1])) };
  },
  // shape ops: bad axes, permutations, slices, concat mismatches, index dtypes
  (r) => {
    const x = T(r, [int(r, 2, 4), int(r, 2, 4)]);
    const v = int(r, 0, 7);
    if (v === 0) return { op: /transpose/, what: 'transpose dim 5', call: () => F.transpose(x, 0, 5) };
    if (v === 1) return { op: /permute/, what: 'permute not a permutation', call: () => F.permute(x, [0, 0]) };
    if (v === 2) return { op: /slice/, what: 'slice end past the axis', call: () => F.slice(x, 1, 0, x.shape[1]! + 2) };
    if (v === 3) return { op: /slice/, what: 'slice start > end', call: () => F.slice(x, 0, 2, 1) };
    if (v === 4) return { op: /concat/, what: 'concat mismatch', call: () => F.concat([x, T(r, [x.shape[0]! + 1, x.shape[1]! + 1])], 0) };
    if (v === 5) return { op: /indexSelect/, what: 'indexSelect f32 index', call: () => F.indexSelect(x, 0, T(r, [2])) };
    if (v === 6) return { op: /gatherRows/, what: 'gatherRows 3-D table', call: () => F.gatherRows(T(r, [2, 2, 2]), T(r, [2], 'i32')) };
    return { op: /gather/, what: 'gather idx rank', call: () => F.gather(x, 1, T(r, [3], 'i32')) };
  },
  // embedding: weight rank/dtype, ids dtype, paddingIdx, hostIds, ids out of range (GPU check at readback)
  (r) => {
    const V = int(r, 2, 12);
    const D = int(r, 1, 5);
    const v = int(r, 0, 5);
    const w = T(r, [V, D]);
    if (v === 0) return { op: /embedding/, what: 'embedding 1-D weight', call: () => F.embedding(T(r, [V]), T(r, [2], 'i32')) };
    if (v === 1) return { op: /embedding/, what: 'embedding f32 ids', call: () => F.embedding(w, T(r, [2])) };
    if (v === 2) return { op: /embedding/, what: 'embedding paddingIdx', call: () => F.embedding(w, T(r, [2], 'i32'), { paddingIdx: V + int(r, 0, 3) }) };
    if (v === 3) return { op: /embedding/, what: 'embedding hostIds length', call: () => F.embedding(w, T(r, [3], 'i32'), { hostIds: [0] }) };
    const n = int(r, 1, 600);
    const ids = Int32Array.from({ length: n }, () => int(r, 0, V - 1));
    const at = int(r, 0, n - 1);
    ids[at] = r() < 0.5 ? -int(r, 1, 1_000_000) : V + int(r, 0, 1_000_000);
    const msg = new RegExp(`embedding: id ${ids[at]} at position ${at} is outside \\[0, ${V}\\)`);
    return { op: msg, what: `embedding id ${ids[at]} at ${at}`, call: () => F.embedding(w, Tensor.from(ids, [n], 'i32')) };
  },
  // layerNorm / softmax / dropout / losses
  (r) => {
    const rows = int(r, 1, 4);
    const C = int(r, 2, 9);
    const v = int(r, 0, 9);
    if (v === 0) return { op: /layer_?norm/i, what: 'layerNorm weight size', call: () => F.layerNorm(T(r, [rows, C]), T(r, [C + 1]), T(r, [C])) };
    if (v === 1) return { op: /layer_?norm/i, what: 'layerNorm i32', call: () => F.layerNorm(T(r, [rows, C], 'i32'), T(r, [C]), T(r, [C])) };
    if (v === 2) return { op: /softmax/i, what: 'softmax i32', call: () => F.softmax(T(r, [rows, C], 'i32')) };
    if (v === 3) return { op: /dropout/, what: 'dropout p', call: () => F.dropout(T(r, [rows, C]), { p: pick(r, [-0.1, 1.5, NaN]) }) };
    if (v === 4) return { op: /bce/, what: 'bce shapes', call: () => F.bce(T(r, [rows, C]), T(r, [rows, C + 1])) };
    if (v === 5) return { op: /bce_with_logits/, what: 'bceWithLogits reduction', call: () => F.bceWithLogits(T(r, [rows, C]), T(r, [rows, C]), { reduction: 'avg' as 'mean' }) };
    if (v === 6) return { op: /cross_?entropy/i, what: 'crossEntropy f32 targets', call: () => F.crossEntropy(T(r, [rows, C]), T(r, [rows])) };
    if (v === 7) return { op: /cross_?entropy/i, what: 'crossEntropy targets length', call: () => F.crossEntropy(T(r, [rows, C]), T(r, [rows + 1], 'i32')) };
    if (v === 8) return { op: /clamp/, what: 'clamp lo > hi', call: () => F.clamp(T(r, [C]), 1, -1) };
    return { op: /sum_squares/, what: 'sumSquares i32', call: () => F.sumSquares(T(r, [C], 'i32')) };
  },
  // AttRec / S3-Rec fused ops
  (r) => {
    const B = int(r, 1, 4);
    const D = int(r, 2, 6);
    const V = int(r, 2, 9);
    const N = int(r, 1, 4);
    const v = int(r, 0, 6);
    if (v === 0) return { op: /euclid/i, what: 'euclidScore D mismatch', call: () => F.euclidScore(T(r, [B, D]), T(r, [B, D]), T(r, [V, D + 1]), T(r, [V, D]), T(r, [B, N], 'i32', V - 1)) };
    if (v === 1) {
      const ids = Int32Array.from({ length: B * N }, () => int(r, 0, V - 1));
      const at = int(r, 0, B * N - 1);
      ids[at] = V + int(r, 0, 50);
      return {
        op: new RegExp(`euclidScore: candidate id ${ids[at]} at position ${at} is outside \\[0, ${V}\\)`),
        what: 'euclidScore id out of range',
        call: () => F.euclidScore(T(r, [B, D]), T(r, [B, D]), T(r, [V, D]), T(r, [V, D]), Tensor.from(ids, [B, N], 'i32')),
      };
    }
    if (v === 2) return { op: /pairwise/i, what: 'pairwiseSigmoidLoss shapes', call: () => F.pairwiseSigmoidLoss(T(r, [B, D]), T(r, [B, D]), T(r, [B + 1, D])) };
    if (v === 3) return { op: /bce_neg|bceNeg/i, what: 'bceNegSampling f32 ids', call: () => F.bceNegSampling(T(r, [B, D]), T(r, [V, D]), T(r, [B]), T(r, [B])) };
    if (v === 4) return { op: /infonce/i, what: 'infonce D mismatch', call: () => F.infonce(T(r, [B, D]), T(r, [V, D + 1]), T(r, [B, N], 'i32', V - 1)) };
    if (v === 5) return { op: /attention/i, what: 'attentionMasked shapes', call: () => F.attentionMasked(T(r, [1, 1, 3, D]), T(r, [1, 1, 4, D]), T(r, [1, 1, 3, D]), null) };
    return { op: /topk/i, what: 'topk k', call: () => F.topkScores({ mode: 'dot', query: T(r, [B, D]), table: T(r, [V, D]), k: pick(r, [0, -1, 1.5]) }) };
  },
  // Tensor.from and nn modules
  (r) => {
    const v = int(r, 0, 5);
    if (v === 0) return { op: /Tensor\.from/, what: 'Tensor.from size', call: () => Tensor.from(new Float32Array(5), [2, 3]) };
    if (v === 1) return { op: /shape/, what: 'Tensor.from negative dim', call: () => Tensor.from(new Float32Array(0), [2, -1, 0]) };
    if (v === 2) return { op: /Linear|linear/, what: 'Linear wrong in', call: () => new Linear(4, 3).forward(T(r, [2, 5])) };
    if (v === 3) return { op: /LayerNorm|layer_?norm/i, what: 'LayerNorm wrong width', call: () => new LayerNorm(4).forward(T(r, [2, 5])) };
    if (v === 4) {
      const e = new Embedding(5, 3);
      return { op: /embedding: id 7 at position 1/, what: 'Embedding id out of range', call: () => e.forward(Tensor.from(Int32Array.of(1, 7), [2], 'i32')) };
    }
    return { op: /embedding/, what: 'Embedding f32 ids', call: () => new Embedding(5, 3).forward(T(r, [2])) };
  },
];

async function outcome(c: BadCall): Promise<Error | null> {
  try {
    const y = c.call();
    if (y instanceof Tensor) await y.toArray();
    else await sync();
    return null;
  } catch (e) {
    return e instanceof Error ? e : new Error(String(e));
  }
}

async function stillCorrect(rnd: Rnd): Promise<void> {
  const n = int(rnd, 1, 40);
  const a = Float32Array.from({ length: n }, () => Math.fround(rnd() * 4 - 2));
  const b = Float32Array.from({ length: n }, () => Math.fround(rnd() * 4 - 2));
  const y = F.sum(F.mul(Tensor.from(a), Tensor.from(b)));
  const want = a.reduce((s, v, i) => s + v * b[i]!, 0);
  expect(await y.item()).toBeCloseTo(want, 4);
}

describeGpu('fuzz: bad calls of the public API', () => {
  const name = 'each bad call throws an Error naming the op; the engine computes right answers afterwards';
  it(name, async () => {
    const seed = seedOf(name);
    const rnd = ref.mulberry32(seed);
    const failures: string[] = [];
    const N = 240;
    for (let i = 0; i < N; i++) {
      const c = pick(rnd, GENS)(rnd);
      const err = await outcome(c);
      if (!err) failures.push(`#${i} ${c.what}: no error`);
      else if (!c.op.test(err.message)) failures.push(`#${i} ${c.what}: message does not name the op (${c.op}): ${err.message.split('\n')[0]}`);
      await stillCorrect(rnd);
    }
    expect(failures, `seed ${seed}`).toEqual([]);
  });

  it('every generator: one pass over each (fixed order) so no op is left out by chance', async () => {
    const rnd = ref.mulberry32(seedOf('every generator'));
    const failures: string[] = [];
    for (const [g, gen] of GENS.entries()) {
      for (let rep = 0; rep < 12; rep++) {
        const c = gen(rnd);
        const err = await outcome(c);
        if (!err) failures.push(`gen ${g} ${c.what}: no error`);
        else if (!c.op.test(err.message)) failures.push(`gen ${g} ${c.what}: ${err.message.split('\n')[0]}`);
      }
      await stillCorrect(rnd);
    }
    expect(failures).toEqual([]);
  });
});
