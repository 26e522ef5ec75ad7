// kernels/bias_gelu.ts — y = gelu(x + bias), the bias add of a Linear fused with S3-Rec's erf GELU: the README's
// example of an op with two inputs and a reduced gradient ("Writing a new kernel").
//
//   y[r, c]  = gelu(x[r, c] + b[c])                  x, y: [..., C] viewed as [R, C] rows; b: [C]
//   dx[r, c] = gy[r, c] * gelu'(x[r, c] + b[c])      gelu(z) = z/2 (1 + erf(z/√2)), gelu'(z) = Φ(z) + z φ(z)
//   db[c]    = Σ_r dx[r, c]                          the bias gradient reduces over the rows
//
// Kernels (one name each: cache key, GPU label, DEBUG line, bench row):
//   bias_gelu        one thread per element (folded 1-D grid), c = i % C. Reads x and b, writes y: 8 B/element.
//   bias_gelu_bwd    one thread per (block of RB rows, column c); a workgroup covers 64 adjacent columns of one
//                    block, so its loads and stores of a row are contiguous. Writes dx for its RB rows and their
//                    sum in row order to part[block, c]. Reads x and gy, writes dx: 12 B/element (+ the partials).
//   bias_gelu_dbias  one thread per column: db[c] = Σ_k part[k, c] over the blocks in order (deterministic, no
//                    atomics). With one block (R <= RB) the partials are db and this kernel does not run.
// Loop budget (llvmpipe: 65,535 loop iterations per invocation, all loops together): bias_gelu_bwd loops over RB
// rows (RB = 64, smaller when loopBudget() is smaller); bias_gelu_dbias loops over blocks [k0, k1) and the launcher
// chunks the blocks across dispatches, the running sum carried in db (bit-identical to one dispatch).
// Speed: memory-bound. Against the composed add + gelu (forward) and gelu backward + sumTo (backward) it saves the
// intermediate x + b, its gradient and three dispatches (bench/bias_gelu.bench.ts).
import { ceilDiv, chunkRanges, defineKernel, defineOp, loopBudget, loopCost, maxLoopIterations, ref, shapeStr, Tensor, zeros } from '../engine/index.js';
import { FOLDED_GROUP, foldedIndex, GELU_WGSL, main1d } from './common.js';

type F64 = ref.F64;

/** Rows per bias_gelu_bwd thread (fewer when the loop budget is smaller). */
const RB = 64;

const fwd = defineKernel({
  name: 'bias_gelu',
  foldable: true,
  wgsl: /* wgsl */ `
// y[i] = gelu(x[i] + b[i % C]). One thread per element.
struct Params { n: u32, C: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;         // [R, C]
@group(0) @binding(2) var<storage, read> b: array<f32>;         // [C]
@group(0) @binding(3) var<storage, read_write> y: array<f32>;   // [R, C]
${GELU_WGSL}
${main1d(256)} {
  let i = ${foldedIndex(256)};
  if (i < p.n) { y[i] = gelu_(x[i] + b[i % p.C]); }
}`,
  grid: ({ n }) => [ceilDiv(n!, 256)],
  minSizes: ({ n, C }) => ({ x: n!, b: C!, y: n! }),
});

const bwd = defineKernel({
  name: 'bias_gelu_bwd',
  foldable: true,
  wgsl: /* wgsl */ `
// dx[r, c] = gy[r, c] * gelu'(x[r, c] + b[c]) for the rb rows of block blk; part[blk, c] = their sum in row order.
// One thread per (block, column): workgroup g covers columns [64 (g % colGroups), +64) of block g / colGroups.
struct Params { R: u32, C: u32, rb: u32, colGroups: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;            // [R, C]
@group(0) @binding(2) var<storage, read> b: array<f32>;            // [C]
@group(0) @binding(3) var<storage, read> gy: array<f32>;           // [R, C]
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;     // [R, C]
@group(0) @binding(5) var<storage, read_write> part: array<f32>;   // [ceil(R / rb), C]
${GELU_WGSL}
${main1d(64)} {
  let g = ${FOLDED_GROUP};
  let c = (g % p.colGroups) * 64u + lid.x;
  let blk = g / p.colGroups;
  let r0 = blk * p.rb;
  if (c >= p.C || r0 >= p.R) { return; }
  let bc = b[c];
  let r1 = min(p.R, r0 + p.rb);
  var s = 0.0;
  for (var r = r0; r < r1; r = r + 1u) {
    let i = r * p.C + c;
    let d = gy[i] * gelu_grad_(x[i] + bc);
    dx[i] = d;
    s = s + d;
  }
  part[blk * p.C + c] = s;
}`,
  grid: ({ R, C, rb }) => [ceilDiv(C!, 64) * ceilDiv(R!, rb!)],
  minSizes: ({ R, C, rb }) => ({ x: R! * C!, b: C!, gy: R! * C!, dx: R! * C!, part: ceilDiv(R!, rb!) * C! }),
  loopTrips: ({ rb }) => loopCost(rb!),
});

const dbias = defineKernel({
  name: 'bias_gelu_dbias',
  foldable: true,
  wgsl: /* wgsl */ `
// db[c] = sum of part[k, c] over the blocks k in [k0, k1), in order; k0 > 0 continues the running sum in db.
struct Params { C: u32, k0: u32, k1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;       // [blocks, C]
@group(0) @binding(2) var<storage, read_write> db: array<f32>;   // [C]
${main1d(64)} {
  let c = ${foldedIndex(64)};
  if (c >= p.C) { return; }
  var s = 0.0;
  if (p.k0 != 0u) { s = db[c]; }
  for (var k = p.k0; k < p.k1; k = k + 1u) { s = s + part[k * p.C + c]; }
  db[c] = s;
}`,
  grid: ({ C }) => [ceilDiv(C!, 64)],
  minSizes: ({ C, k1 }) => ({ part: k1! * C!, db: C! }),
  loopTrips: ({ k0, k1 }) => loopCost(k1! - k0!),
});

/** dx [R, C] and db [C] (null when not needed) of y = gelu(x + b). */
function biasGeluBackward(x: Tensor, b: Tensor, gy: Tensor, needDb: boolean): [Tensor, Tensor | null] {
  const C = b.size;
  const R = C ? x.size / C : 0;
  const dx = Tensor.empty(x.shape); // [..., C]
  if (x.size === 0) return [dx, needDb ? zeros([C]) : null];
  const rb = Math.max(1, Math.min(RB, maxLoopIterations(loopBudget())));
  const blocks = ceilDiv(R, rb);
  // One block: its partials are db. More: partials [blocks, C], then their fixed-order sum.
  const db = needDb ? Tensor.empty([C]) : null; // [C]
  const part = db && blocks === 1 ? db : Tensor.empty([blocks, C]); // [blocks, C]
  bwd.run({ x, b, gy, dx, part }, { R, C, rb, colGroups: ceilDiv(C, 64) });
  if (db && part !== db) {
    for (const [k0, k1] of chunkRanges(blocks, maxLoopIterations(loopBudget()))) dbias.run({ part, db }, { C, k0, k1 });
  }
  if (part !== db) part.dispose();
  return [dx, db];
}

/** The autograd op: inputs [x [..., C], b [C]]. */
const biasGeluOp = defineOp<Record<string, never>>({
  name: 'bias_gelu',
  forward(ctx, [x, b]) {
    const y = Tensor.empty(x!.shape); // [..., C]
    if (y.size) fwd.run({ x: x!, b: b!, y }, { n: y.size, C: b!.size });
    ctx.save(x!, b!);
    return y;
  },
  backward(ctx, gy) {
    const [x, b] = ctx.saved as [Tensor, Tensor];
    const [dx, db] = biasGeluBackward(x, b, gy, ctx.needsGrad[1]!);
    if (!ctx.needsGrad[0]) dx.dispose();
    return [ctx.needsGrad[0] ? dx : null, db];
  },
});

/** gelu(x + bias) with the bias over the last axis: x [..., C] f32, bias [C] f32 -> [..., C]. */
export function biasGelu(x: Tensor, bias: Tensor): Tensor {
  const C = x.shape[x.shape.length - 1];
  if (x.dtype !== 'f32' || bias.dtype !== 'f32') throw new Error(`biasGelu: x and bias must be f32, got ${x.dtype} and ${bias.dtype}`);
  if (C === undefined || bias.shape.length !== 1 || bias.shape[0] !== C) {
    throw new Error(`biasGelu: bias ${shapeStr(bias.shape)} must be [C] for x ${shapeStr(x.shape)} (C = the last axis)`);
  }
  return biasGeluOp.apply([x, bias], {});
}

// ------------------------------------------------------------------ float64 reference
const gelu64 = (z: number): number => 0.5 * z * (1 + ref.erf(z / Math.SQRT2));
const geluGrad64 = (z: number): number => 0.5 * (1 + ref.erf(z / Math.SQRT2)) + (z * Math.exp(-0.5 * z * z)) / Math.sqrt(2 * Math.PI);

/** y = gelu(x + b) in float64. */
export function refBiasGelu(x: F64, b: F64): F64 {
  const C = b.data.length;
  return { data: x.data.map((v, i) => gelu64(v + b.data[i % C]!)), shape: [...x.shape] };
}

/** [dx, db] of y = gelu(x + b) for the upstream gradient gy, in float64. */
export function refBiasGeluGrad(x: F64, b: F64, gy: F64): [F64, F64] {
  const C = b.data.length;
  const dx = x.data.map((v, i) => gy.data[i]! * geluGrad64(v + b.data[i % C]!));
  const db = new Float64Array(C);
  dx.forEach((d, i) => (db[i % C] = db[i % C]! + d));
  return [{ data: dx, shape: [...x.shape] }, { data: db, shape: [C] }];
}
