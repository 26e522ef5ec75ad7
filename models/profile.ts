// models/profile.ts — per-kernel time of one training step (or any recorded GPU work), for models and benchmarks.
//
//   const rows = await profileStep(() => { const loss = scope(() => model.loss(b)); backward(loss); opt.step(); ... });
//   console.error(formatProfile(rows));
//
// How: while fn runs, every dispatch is recorded (kernel name, pipeline, bind group, grid) and still executed
// normally, and buffers released by the pool are held back (not reused), so after fn each recorded dispatch can be
// REPLAYED alone: encoded in its own command buffer, submitted, and timed with a host clock around
// `onSubmittedWorkDone()` (llvmpipe has no timestamp queries). Each dispatch is replayed `reps` times (default 3) and
// its minimum kept; the per-dispatch submit + wait overhead (an empty submit, measured the same way) is subtracted.
// Rows aggregate by kernel name: { kernel, ms (total over its dispatches), count }, slowest first.
// Caveats: the replay sees the buffers as they are AFTER fn (in-place kernels such as optimizer updates run again:
// profile on a model whose state you can spare, or accept the extra updates); data-dependent kernels (skipped rows,
// early exits) may take a different path than in the step itself. fn may be async (its awaits must not read
// tensors created by other work).
import { rt, sync } from '../engine/index.js';

export interface ProfileRow {
  kernel: string;
  /** Total milliseconds over its dispatches in one run of fn. */
  ms: number;
  count: number;
}

interface Recorded {
  name: string;
  pipeline: GPUComputePipeline;
  bindGroup: GPUBindGroup;
  grid: readonly [number, number, number];
}

export async function profileStep(fn: () => unknown, o: { reps?: number } = {}): Promise<ProfileRow[]> {
  const { queue, pool, device } = rt();
  await sync();
  const recorded: Recorded[] = [];
  const held: GPUBuffer[] = [];
  const origDispatch = queue.dispatch.bind(queue);
  const origRelease = pool.release.bind(pool);
  queue.dispatch = (name, pipeline, bindGroup, grid) => {
    recorded.push({ name, pipeline, bindGroup, grid });
    origDispatch(name, pipeline, bindGroup, grid);
  };
  pool.release = (buf: GPUBuffer) => {
    held.push(buf);
  };
  try {
    await fn();
    await sync();
  } finally {
    queue.dispatch = origDispatch;
  }
  const reps = o.reps ?? 3;
  const timeOne = async (r: Recorded | null): Promise<number> => {
    let best = Infinity;
    for (let k = 0; k < reps; k++) {
      const enc = device.createCommandEncoder({ label: 'seqrec.profile' });
      if (r) {
        const pass = enc.beginComputePass();
        pass.setPipeline(r.pipeline);
        pass.setBindGroup(0, r.bindGroup);
        pass.dispatchWorkgroups(r.grid[0], r.grid[1], r.grid[2]);
        pass.end();
      }
      const t0 = performance.now();
      device.queue.submit([enc.finish()]);
      await device.queue.onSubmittedWorkDone();
      best = Math.min(best, performance.now() - t0);
    }
    return best;
  };
  try {
    const overhead = await timeOne(null);
    const byName = new Map<string, ProfileRow>();
    for (const r of recorded) {
      const ms = Math.max(0, (await timeOne(r)) - overhead);
      const row = byName.get(r.name) ?? { kernel: r.name, ms: 0, count: 0 };
      row.ms += ms;
      row.count++;
      byName.set(r.name, row);
    }
    return [...byName.values()].sort((a, b) => b.ms - a.ms);
  } finally {
    pool.release = origRelease;
    for (const b of held) origRelease(b);
    queue.flush();
  }
}

/** A text table of profile rows with the total and each kernel's share. */
export function formatProfile(rows: readonly ProfileRow[]): string {
  const total = rows.reduce((s, r) => s + r.ms, 0);
  const dispatches = rows.reduce((s, r) => s + r.count, 0);
  const w = Math.max(6, ...rows.map((r) => r.kernel.length));
  const lines = rows.map((r) => `${r.kernel.padEnd(w)}  ${r.ms.toFixed(3).padStart(9)}  ${String(r.count).padStart(5)}  ${((100 * r.ms) / (total || 1)).toFixed(1).padStart(5)}%`);
  return [`${'kernel'.padEnd(w)}  ${'ms'.padStart(9)}  ${'count'.padStart(5)}  share`, ...lines, `${'total'.padEnd(w)}  ${total.toFixed(3).padStart(9)}  ${String(dispatches).padStart(5)}`].join('\n');
}
