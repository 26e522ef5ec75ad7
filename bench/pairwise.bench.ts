// pairwise (kernels/pairwise.ts): MIP's double-sigmoid pairwise loss (id form) at S3-Rec pretraining positions
// N = 100·50, D = 64, V = 12103 (~5% of rows masked = scored), forward + backward, against the composition from
// engine ops and tfjs. Data, references, variants and tolerances: bench/losses.ts.
import { lossEntry } from './losses.js';
import type { BenchEntry, BenchSize } from './types.js';

export function entries(size: BenchSize): BenchEntry[] {
  const d = size === 'tiny' ? { B: 3, L: 6, D: 8, V: 50, C: 2, maxLen: 5 } : { B: 100, L: 50, D: 64, V: 12103, C: 2, maxLen: 16 };
  return [lossEntry('pairwise', 'pairwise', d)];
}
