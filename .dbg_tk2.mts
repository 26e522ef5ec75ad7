import { initGpu, ref, Tensor, destroyGpu, sync } from './engine/index.js';
import { topkScores } from './kernels/topk.js';
await initGpu();
const [B, V, D, K, C, tile] = process.argv.slice(2).map(Number) as [number, number, number, number, number, 4 | 8];
const rnd = ref.mulberry32(1);
const mk = (n: number) => Float32Array.from({ length: n }, () => (rnd() * 2 - 1) * 0.1);
const u = Tensor.from(mk(B * D), [B, D]), m = Tensor.from(mk(B * D), [B, D]), X = Tensor.from(mk(V * D), [V, D]), Q = Tensor.from(mk(V * D), [V, D]);
for (let r = 0; r < 3; r++) {
  const t0 = performance.now();
  const o = topkScores({ mode: 'euclid', query: { u, m }, table: { X, Q }, k: K, tile, chunks: C });
  const s = (await o.scores.toArray()) as Float32Array;
  let zeros = 0; for (const v of s) if (v === 0) zeros++;
  console.log(Array.from(s.slice(0, 6)), Array.from(await o.ids.toArray()).slice(0, 6));
  console.log(`tile ${tile} ${B}x${V}x${D} K${K} C${C}: ${(performance.now() - t0).toFixed(1)} ms, zeros ${zeros}`);
}
await destroyGpu();
