// models/profile.ts — per-kernel time of one training step (or any recorded GPU work), for the models' CLIs.
//
//   const rows = await profileStep(() => { const loss = scope(() => model.loss(b)); backward(loss); opt.step(); ... });
//   console.error(formatProfile(rows));
//
// A thin layer over the engine's profiler (engine/profile.ts `profileKernels`): fn runs once as usual while every
// dispatch is recorded, then each recorded dispatch is replayed alone (submit, wait, `reps` times, fastest kept,
// an empty submit's cost subtracted) — a host clock, as llvmpipe has no timestamp queries. Rows aggregate by
// kernel name { kernel, ms (total over its dispatches), count }, slowest first.
// Caveats: the replay sees the buffers as they are AFTER fn, so in-place kernels (optimizer updates) run again
// (profile a model whose state you can spare) and data-dependent kernels are timed on the final data.
import { profileKernels, type ProfileRow } from '../engine/index.js';

export type { ProfileRow };

/** Per-kernel rows of the GPU work fn records (fn may be async). */
export async function profileStep(fn: () => unknown, o: { reps?: number } = {}): Promise<ProfileRow[]> {
  return (await profileKernels(fn, o)).rows;
}

/** A text table of profile rows: every kernel with its total ms, dispatch count and share, then the total. */
export function formatProfile(rows: readonly ProfileRow[]): string {
  const total = rows.reduce((s, r) => s + r.ms, 0);
  const dispatches = rows.reduce((s, r) => s + r.count, 0);
  const w = Math.max(6, ...rows.map((r) => r.kernel.length));
  const lines = rows.map((r) => `${r.kernel.padEnd(w)}  ${r.ms.toFixed(3).padStart(9)}  ${String(r.count).padStart(5)}  ${((100 * r.ms) / (total || 1)).toFixed(1).padStart(5)}%`);
  return [`${'kernel'.padEnd(w)}  ${'ms'.padStart(9)}  ${'count'.padStart(5)}  share`, ...lines, `${'total'.padEnd(w)}  ${total.toFixed(3).padStart(9)}  ${String(dispatches).padStart(5)}`].join('\n');
}
