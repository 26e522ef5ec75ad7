// bce_neg_sampling: S3-Rec's fine-tuning loss (one positive and one sampled negative per position, mean over the
// real positions) at N = 256·50, D = 64, V = 12103 (~12% real rows), forward + backward, against the composition
// from engine ops and tfjs. Data, references, variants and tolerances: bench/losses.ts.
import { lossEntry } from './losses.js';
import type { BenchEntry, BenchSize } from './types.js';

export function entries(size: BenchSize): BenchEntry[] {
  const d = size === 'tiny' ? { B: 4, L: 6, D: 8, V: 50, C: 2, maxLen: 4 } : { B: 256, L: 50, D: 64, V: 12103, C: 2, maxLen: 11 };
  return [lossEntry('bce_neg_sampling', 'bce', d)];
}
