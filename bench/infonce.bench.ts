// infonce (kernels/infonce.ts): the fused InfoNCE loss over sampled candidates at S3-Rec fine-tuning positions
// (N = 256·50, C = 16, D = 64, V = 12103, tau 0.1, ~12% real rows), forward + backward, against the composition
// from engine ops and tfjs; `fused_allrows` has every row valid (the fused kernel's worst case). Data, references,
// variants and tolerances: bench/losses.ts.
import { lossEntry } from './losses.js';
import type { BenchEntry, BenchSize } from './types.js';

export function entries(size: BenchSize): BenchEntry[] {
  const d = size === 'tiny' ? { B: 4, L: 6, D: 8, V: 50, C: 5, maxLen: 4 } : { B: 256, L: 50, D: 64, V: 12103, C: 16, maxLen: 11 };
  return [lossEntry('infonce', 'infonce', d, { allRows: true })];
}
