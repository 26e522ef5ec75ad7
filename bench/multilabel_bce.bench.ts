// multilabel_bce (kernels/multilabel_bce.ts): S3-Rec's AAP / MAP loss, a multi-label BCE of each row against all
// A = 638 attributes (CSR targets, ~2.5 positives per row) at pretraining positions N = 100·50, D = 64 (~12% of
// rows scored), forward + backward, against the composition from engine ops (dense targets, matmul, sigmoid,
// log) and tfjs; `fused_allrows` has every row valid (the fused kernel's worst case). Data, references, variants
// and tolerances: bench/losses.ts.
import { lossEntry } from './losses.js';
import type { BenchEntry, BenchSize } from './types.js';

export function entries(size: BenchSize): BenchEntry[] {
  const d = size === 'tiny' ? { B: 3, L: 6, D: 8, V: 20, C: 20, maxLen: 5 } : { B: 100, L: 50, D: 64, V: 638, C: 638, maxLen: 16 };
  return [lossEntry('multilabel_bce', 'multilabel', d, { allRows: true })];
}
