// kernels/scale_shift.ts — the example kernel of the README's "Writing a new kernel" section.
import { ceilDiv, defineKernel, defineOp, Tensor } from '../engine/index.js';

const scaleShift = defineKernel({
  name: 'scale_shift',               // one name: cache key, GPU label, DEBUG line, bench row, test title
  foldable: true,                    // 1-D grid: may fold into 2-D beyond 65535 workgroups
  wgsl: /* wgsl */ `
// out[i] = a * x[i] + b. One thread per element.
struct Params { n: u32, a: f32, b: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [n]
@group(0) @binding(2) var<storage, read_write> out: array<f32>;  // [n]
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let i = (wid.x + wid.y * nwg.x) * 256u + lid.x;
  if (i < p.n) { out[i] = p.a * x[i] + p.b; }
}`,
  grid: ({ n }) => [ceilDiv(n!, 256)],
  minSizes: ({ n }) => ({ x: n!, out: n! }),
});

export const scaleShiftOp = defineOp<{ a: number; b: number }>({
  name: 'scale_shift',
  forward(ctx, [x], { a, b }) {
    const out = Tensor.empty(x!.shape);                 // [...x]
    scaleShift.run({ x: x!, out }, { n: x!.size, a, b });
    return out;
  },
  backward(ctx, gy) {
    const gx = Tensor.empty(gy.shape);                  // d/dx = a
    scaleShift.run({ x: gy, out: gx }, { n: gy.size, a: ctx.attrs.a, b: 0 });
    return [gx];
  },
});

export const refScaleShift = (x: Float64Array, a: number, b: number) => x.map((v) => a * v + b);
