import { initGpu, ref, Tensor, destroyGpu } from './engine/index.js';
import { topkScores, refTopkScores } from './kernels/topk.js';
await initGpu();
const [B, V, D, K, C, tile] = process.argv.slice(2).map(Number) as [number, number, number, number, number, 4 | 8];
const rnd = ref.mulberry32(1);
const mkF = (rows: number) => ({ data: Float64Array.from({ length: rows * D }, () => Math.fround((rnd() * 2 - 1) * 0.1)), shape: [rows, D] });
const xs = [mkF(B), mkF(B), mkF(V), mkF(V)];
const [u, m, X, Q] = xs.map((x) => Tensor.from(Float32Array.from(x.data), x.shape));
const o = topkScores({ mode: 'euclid', query: { u: u!, m: m! }, table: { X: X!, Q: Q! }, k: K, tile, chunks: C });
const ids = await o.ids.toArray(); const sc = await o.scores.toArray();
const want = refTopkScores({ mode: 'euclid', tensors: xs, k: K, alpha: 0.2 });
for (let b = 0; b < B; b++) {
  const g = Array.from(ids.slice(b * K, (b + 1) * K)); const w = Array.from(want.ids.slice(b * K, (b + 1) * K));
  if (g.join() !== w.join()) console.log('user', b, 'got', g.slice(0, 6).join(','), Array.from(sc.slice(b*K, b*K+3)).map(v=>v.toFixed(4)).join(','), 'want', w.slice(0, 6).join(','), Array.from(want.scores.slice(b*K, b*K+3)).map(v=>v.toFixed(4)).join(','));
}
await destroyGpu();
