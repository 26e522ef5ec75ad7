import { initGpu, ref, Tensor, destroyGpu } from './engine/index.js';
import { topkScores } from './kernels/topk.js';
await initGpu();
const [B, V, D, K, C] = process.argv.slice(2).map(Number) as [number, number, number, number, number];
const rnd = ref.mulberry32(1);
const mk = (n: number) => Float32Array.from({ length: n }, () => (rnd() * 2 - 1) * 0.1);
const u = Tensor.from(mk(B * D), [B, D]), m = Tensor.from(mk(B * D), [B, D]), X = Tensor.from(mk(V * D), [V, D]), Q = Tensor.from(mk(V * D), [V, D]);
const res: Float32Array[] = [];
for (const tile of [8, 4] as const) {
  const o = topkScores({ mode: 'euclid', query: { u, m }, table: { X, Q }, k: K, tile, chunks: C });
  res.push((await o.scores.toArray()) as Float32Array);
}
let diff = 0; for (let i = 0; i < res[0]!.length; i++) if (res[0]![i] !== res[1]![i]) diff++;
console.log(B, V, D, K, 'diff', diff, 'of', res[0]!.length, res[0]!.slice(0, 3), res[1]!.slice(0, 3));
await destroyGpu();
