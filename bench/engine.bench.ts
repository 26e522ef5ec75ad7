// Engine overheads: one empty dispatch with its own submit and wait, and a batch of 1000 dispatches in one
// submit (the cost a training step pays per kernel launch). The "reference" is the count: each dispatch adds 1.
import { defineKernel, sync, Tensor } from '../engine/index.js';
import type { BenchEntry, BenchSize, Instance } from './types.js';

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

function dispatches(variant: string, count: number): BenchEntry<null> {
  return {
    op: 'engine',
    name: 'engine.dispatch',
    shape: `${count} dispatch${count > 1 ? 'es' : ''}`,
    dims: { dispatches: count },
    inputs: () => null,
    reference: () => ({ added: [count] }),
    tol: { atol: 0, rtol: 0 },
    variants: [
      {
        name: variant,
        kind: 'overhead',
        setup(): Instance {
          const out = Tensor.from(new Float32Array(1)); // [1]
          const run = (): void => {
            for (let i = 0; i < count; i++) noop.run({ out });
          };
          return {
            run,
            async outputs() {
              const before = (await out.toArray())[0]!;
              run();
              await sync();
              return { added: [(await out.toArray())[0]! - before] };
            },
            dispose: () => out.dispose(),
          };
        },
      },
    ],
  };
}

export function entries(size: BenchSize): BenchEntry[] {
  return [dispatches('empty', 1), dispatches('batch1000', size === 'tiny' ? 10 : 1000)];
}
