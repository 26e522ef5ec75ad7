// engine/profile.ts — a per-kernel profile of some GPU work (a training step, an evaluation batch).
// `profileKernels(fn)` runs fn once as usual while recording every dispatch (pipeline, bind group, grid), waits
// for the GPU, then replays each recorded dispatch on its own — submit, wait, `reps` times, keep the fastest — and
// subtracts the cost of an empty submit. So each kernel is timed alone on an otherwise idle GPU, with the real
// shapes and bindings of the step. Every buffer the step frees and every uniform chunk is held out of reuse until
// the replay is done, so each replayed dispatch reads its own inputs as the step left them (in-place kernels such
// as optimizer updates run again: profile state you can spare). With no timestamp-query (llvmpipe) this host clock
// is the best there is.
import { rt } from './runtime.js';

export interface ProfileRow {
  kernel: string;
  /** Dispatches of this kernel in the profiled work. */
  count: number;
  /** Total milliseconds over those dispatches. */
  ms: number;
}

export interface Profile {
  rows: ProfileRow[];
  /** Wall milliseconds of the profiled work run normally (batched submits, not the replay). */
  wallMs: number;
  dispatches: number;
  /** Milliseconds of an empty submit + wait (subtracted from each replay). */
  overheadMs: number;
}

/** Run `fn` once, then time each of its dispatches alone; rows sorted by total time, slowest first. */
export async function profileKernels(fn: () => unknown, o: { reps?: number } = {}): Promise<Profile> {
  const { queue, device, pool } = rt();
  const reps = o.reps ?? 3;
  await queue.sync();
  const rec: Array<{ name: string; pipeline: GPUComputePipeline; bindGroup: GPUBindGroup; grid: readonly [number, number, number] }> = [];
  const retained: GPUBuffer[] = [];
  queue.retainUniforms = retained;
  pool.held = []; // buffers freed during fn stay out of reuse until the replay is done
  queue.onDispatch = (name, pipeline, bindGroup, grid) => rec.push({ name, pipeline, bindGroup, grid });
  const t0 = performance.now();
  try {
    await fn();
    await queue.sync();
  } catch (e) {
    pool.releaseHeld();
    throw e;
  } finally {
    queue.onDispatch = null;
    queue.retainUniforms = null;
  }
  const wallMs = performance.now() - t0;
  const submit = async (d?: (typeof rec)[number]): Promise<number> => {
    const enc = device.createCommandEncoder();
    if (d) {
      const pass = enc.beginComputePass();
      pass.setPipeline(d.pipeline);
      pass.setBindGroup(0, d.bindGroup);
      pass.dispatchWorkgroups(d.grid[0], d.grid[1], d.grid[2]);
      pass.end();
    }
    const s = performance.now();
    device.queue.submit([enc.finish()]);
    await device.queue.onSubmittedWorkDone();
    return performance.now() - s;
  };
  let overheadMs = Infinity;
  for (let i = 0; i < 5; i++) overheadMs = Math.min(overheadMs, await submit());
  const by = new Map<string, ProfileRow>();
  try {
    for (const d of rec) {
      let best = Infinity;
      for (let r = 0; r < reps; r++) best = Math.min(best, await submit(d));
      const row = by.get(d.name) ?? { kernel: d.name, count: 0, ms: 0 };
      row.count++;
      row.ms += Math.max(0, best - overheadMs);
      by.set(d.name, row);
    }
  } finally {
    for (const b of retained) pool.release(b);
    queue.flush();
    pool.releaseHeld();
  }
  return { rows: [...by.values()].sort((a, b) => b.ms - a.ms), wallMs, dispatches: rec.length, overheadMs };
}

/** A fixed-width table of a profile (the `top` slowest kernels, then the total). */
export function formatProfile(p: Profile, top = 15): string {
  const total = p.rows.reduce((s, r) => s + r.ms, 0);
  const w = Math.max(6, ...p.rows.slice(0, top).map((r) => r.kernel.length));
  const lines = [`${'kernel'.padEnd(w)}  calls       ms      %`];
  for (const r of p.rows.slice(0, top)) {
    lines.push(`${r.kernel.padEnd(w)}  ${String(r.count).padStart(5)}  ${r.ms.toFixed(2).padStart(7)}  ${((100 * r.ms) / Math.max(total, 1e-9)).toFixed(1).padStart(5)}`);
  }
  if (p.rows.length > top) lines.push(`${`(${p.rows.length - top} more)`.padEnd(w)}  ${' '.repeat(5)}  ${p.rows.slice(top).reduce((s, r) => s + r.ms, 0).toFixed(2).padStart(7)}`);
  lines.push(`${'sum'.padEnd(w)}  ${String(p.dispatches).padStart(5)}  ${total.toFixed(2).padStart(7)}  (run as usual: ${p.wallMs.toFixed(1)} ms wall)`);
  return lines.join('\n');
}
