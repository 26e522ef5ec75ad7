// Engine overheads: one empty dispatch with its own submit and wait, and a batch of 1000 dispatches in one
// submit (the cost a training step pays per kernel launch).
import { defineKernel, rt, sync, Tensor } from '../engine/index.js';
import type { BenchCase } from './types.js';

const noop = defineKernel({
  name: 'noop',
  wgsl: /* wgsl */ `
// Touches one element so the dispatch is not optimised away.
@group(0) @binding(0) var<storage, read_write> out: array<f32>; // [1]
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) gid: vec3u) {
  if (gid.x == 0u) { out[0] = out[0] + 1.0; }
}`,
  grid: () => [1],
});

function dispatches(name: string, count: number): BenchCase {
  return {
    name,
    shape: `${count} dispatch${count > 1 ? 'es' : ''}`,
    setup() {
      const out = Tensor.from(new Float32Array(1)); // [1]
      const run = (): void => {
        for (let i = 0; i < count; i++) noop.run({ out });
      };
      return {
        run,
        async validate() {
          const before = (await out.toArray())[0]!;
          run();
          await sync();
          const after = (await out.toArray())[0]!;
          if (after - before !== count) throw new Error(`${name}: expected +${count}, got +${after - before}`);
          if (rt().queue.stats.dispatches === 0) throw new Error(`${name}: no dispatch recorded`);
        },
        dispose() {
          out.dispose();
        },
      };
    },
  };
}

export const cases: BenchCase[] = [dispatches('dispatch.empty', 1), dispatches('dispatch.batch1000', 1000)];
