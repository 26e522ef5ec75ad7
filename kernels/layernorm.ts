// kernels/layernorm.ts — TF-style layer norm as in the official S3-Rec `modules.LayerNorm`, forward + backward.
//
//   u_r = mean_c x[r, c],  s_r = mean_c (x[r, c] - u_r)^2 (biased),  rstd_r = 1 / sqrt(s_r + eps)
//   y[r, c] = w[c] * ((x[r, c] - u_r) * rstd_r) + b[c]
//   x, y: [..., D] viewed as [rows, D]; w, b: [D]; eps defaults to the official 1e-12.
//
// eps = 1e-12 is effectively 0 next to any real variance in f32. A constant row (e.g. D = 1, or a row of equal
// values) still never gives NaN: the mean is computed around the row's first element (u = k + sum(x - k) / D,
// k = x[r, 0]), so for a constant row every x - k is exactly 0, u == x exactly, x - u == 0, s == 0,
// rstd = 1 / sqrt(1e-12) = 1e6 (finite) and y = w * 0 * 1e6 + b = b exactly. The backward then gives
// dx = rstd * (g*w - mean(g*w)) (huge but finite; the official autograd gives the same) and dw = 0, db = sum g.
// (PyTorch's plain mean of a constant row can be off by an ulp, so the official code may return b + w*O(1e-2)
// for such a row; ours returns b.) Only eps = 0 with a constant row gives 0 * inf = NaN, as PyTorch would.
// The shifted mean also keeps the variance accurate for rows with a large common offset (|x| ~ 1000).
//
// Forward: a row program (kernels/common_rows.ts): two sum reductions (shifted mean, then centred variance) and a
// write pass; `row` variant (thread per row, serial over D) or `wg` (workgroup per row); saves mean and rstd
// per row. Reads x 3x (in cache), w and b once per row, writes y, mean, rstd.
// Backward, one fused kernel `layernorm_bwd` (`layernorm_bwd{vec4}` when D is a multiple of 4: 4 columns per load,
// the row sums as 4 interleaved partial sums), one workgroup of WG = 64 threads per block of 64 rows:
//   phase 1 (dx): thread t owns row r0 + t: a = mean_c(g*w), bb = mean_c(g*w*xhat), then
//                 dx = rstd * (g*w - a - xhat * bb), xhat = (x - u) * rstd  (recomputed from saved u, rstd)
//   phase 2 (dw, db partials): thread t owns columns c = t, t + 64, ...: serial sums over the block's rows of
//                 g*xhat and g -> pw[block, c], pb[block, c]. No barrier: phase 2 reads only inputs.
// then `layernorm_bwd_dwdb` sums the partials over blocks in a fixed order (thread per column): deterministic,
// no atomics. With one block the partials are the result (one dispatch). Traffic: reads x and gy 2x each,
// writes dx, then 2 * blocks * D partials.
// Variants: forward `row` / `wg` (rowConfig picks by adapter; bench rows layernorm.fwd_row / layernorm.fwd_wg).
// Long rows and llvmpipe's loop budget (65,535 iterations per invocation, all loops together): the forward row
// program switches variant (common_rows.ts runRow); the fused backward's two serial loops over D (~3D iterations per
// thread) give way past ~21,000 columns to the row program layernorm_bwd_dx (same arithmetic) plus
// layernorm_bwd_part (one thread per (block, column)), and more than ~65,000 blocks of partials are summed by
// reduce.ts's chunked sum instead of layernorm_bwd_dwdb's serial loop.
import { ceilDiv, copyInto, defineKernel, defineOp, fillInPlace, loopCost, ref, Tensor, vec4Count } from '../engine/index.js';
import { FOLDED_GROUP, foldedIndex, main1d } from './common.js';
import { rowProgram, runRow, type RowOptions } from './common_rows.js';
import { sumTo } from './reduce.js';

type F64 = ref.F64;
const WG = 64;

const lnFwd = rowProgram(
  {
    name: 'layernorm_fwd',
    doc: '// y = w * (x - mean) / sqrt(biased var + eps) + b per row; saves mean and rstd.',
    decls: /* wgsl */ `struct Params { rows: u32, C: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;            // [rows, C]
@group(0) @binding(2) var<storage, read> w: array<f32>;            // [C]
@group(0) @binding(3) var<storage, read> b: array<f32>;            // [C]
@group(0) @binding(4) var<storage, read_write> y: array<f32>;      // [rows, C]
@group(0) @binding(5) var<storage, read_write> mean: array<f32>;   // [rows]
@group(0) @binding(6) var<storage, read_write> rstd: array<f32>;   // [rows]`,
    // Shift by the row's first element: exact zero deviations for a constant row (see the header).
    pre: 'let k = x[base];',
    passes: [
      { op: 'sum', out: 's1', expr: '(x[base + c] - k)', then: 'let u = k + s1 / f32(p.C);' },
      { op: 'sum', out: 's2', expr: '(x[base + c] - u) * (x[base + c] - u)', then: 'let r = 1.0 / sqrt(s2 / f32(p.C) + p.eps);' },
    ],
    each: 'y[base + c] = w[c] * ((x[base + c] - u) * r) + b[c];',
    once: 'mean[row] = u; rstd[row] = r;',
  },
  ({ rows, C }) => ({ x: rows! * C!, w: C!, b: C!, y: rows! * C!, mean: rows!, rstd: rows! }),
);

/** The inputs and dx of the backward kernels (after their `struct Params`); T: f32, or vec4<f32> (4 columns). */
const bwdDecls = (T = 'f32'): string => /* wgsl */ `@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<${T}>;            // [rows, C]
@group(0) @binding(2) var<storage, read> w: array<${T}>;            // [C]
@group(0) @binding(3) var<storage, read> gy: array<${T}>;           // [rows, C]
@group(0) @binding(4) var<storage, read> mean: array<f32>;         // [rows]
@group(0) @binding(5) var<storage, read> rstd: array<f32>;         // [rows]
@group(0) @binding(6) var<storage, read_write> dx: array<${T}>;     // [rows, C]`;
const BWD_DECLS = bwdDecls();

/**
 * The fused backward; `layernorm_bwd{vec4}` (C a multiple of 4) reads and writes 4 columns per load (Cv = C / 4
 * vec4 columns; the row sums a, bb are kept as 4 interleaved partial sums, added at the end).
 */
const lnBwdKernels = [false, true].map((v) => {
  const T = v ? 'vec4<f32>' : 'f32';
  const hsum = (e: string): string => (v ? `(${e}.x + ${e}.y + ${e}.z + ${e}.w)` : e);
  return defineKernel({
    name: v ? 'layernorm_bwd{vec4}' : 'layernorm_bwd',
    foldable: true,
    wgsl: /* wgsl */ `
// Layer norm backward for a block of WG rows: dx (thread per row) and per-block partial sums of dw, db
// (thread per column${v ? ' vec4' : ''}). flags bit 0: write dx; bit 1: write the partials.
const WG = ${WG}u;
struct Params { rows: u32, C: u32, flags: u32 }
${bwdDecls(T)}
@group(0) @binding(7) var<storage, read_write> pw: array<${T}>;     // [blocks, C] partial dweight
@group(0) @binding(8) var<storage, read_write> pb: array<${T}>;     // [blocks, C] partial dbias
${main1d(WG)} {
  let blk = ${FOLDED_GROUP};
  let r0 = blk * WG;
  if (r0 >= p.rows) { return; }
  let row = r0 + lid.x;
  let Cv = p.C${v ? ' / 4u' : ''}; // columns per load
  if ((p.flags & 1u) != 0u && row < p.rows) {
    let base = row * Cv;
    let u = mean[row];
    let r = rstd[row];
    var sa = ${T}(0.0);
    var sbb = ${T}(0.0);
    for (var c = 0u; c < Cv; c = c + 1u) {
      let g = gy[base + c] * w[c];
      sa = sa + g;
      sbb = sbb + g * ((x[base + c] - u) * r);
    }
    let a = ${hsum('sa')} / f32(p.C);
    let bb = ${hsum('sbb')} / f32(p.C);
    for (var c = 0u; c < Cv; c = c + 1u) {
      let g = gy[base + c] * w[c];
      dx[base + c] = r * (g - a - ((x[base + c] - u) * r) * bb);
    }
  }
  if ((p.flags & 2u) != 0u) {
    let r1 = min(r0 + WG, p.rows);
    for (var c = lid.x; c < Cv; c = c + WG) {
      var sw = ${T}(0.0);
      var sb = ${T}(0.0);
      for (var rr = r0; rr < r1; rr = rr + 1u) {
        let g = gy[rr * Cv + c];
        sw = sw + g * ((x[rr * Cv + c] - mean[rr]) * rstd[rr]);
        sb = sb + g;
      }
      pw[blk * Cv + c] = sw;
      pb[blk * Cv + c] = sb;
    }
  }
}`,
    grid: ({ rows }) => [ceilDiv(rows!, WG)],
    // dx: two serial loops over Cv; partials: ceil(Cv / WG) column loads x up to WG rows
    loopTrips: ({ C, flags }) => {
      const Cv = v ? C! / 4 : C!;
      return (flags! & 1 ? 2 * loopCost(Cv) : 0) + (flags! & 2 ? loopCost(ceilDiv(Cv, WG), loopCost(WG)) : 0);
    },
    minSizes: ({ rows, C, flags }) => {
      const Cv = v ? C! / 4 : C!; // binding elements per row
      return {
        x: rows! * Cv,
        w: Cv,
        gy: rows! * Cv,
        mean: rows!,
        rstd: rows!,
        ...(flags! & 1 ? { dx: rows! * Cv } : {}),
        ...(flags! & 2 ? { pw: ceilDiv(rows!, WG) * Cv, pb: ceilDiv(rows!, WG) * Cv } : {}),
      };
    },
  });
});

const lnDwDb = defineKernel({
  name: 'layernorm_bwd_dwdb',
  wgsl: /* wgsl */ `
// dw[c] = sum over blocks of pw[blk, c], db likewise. Thread per column, blocks in order (deterministic).
struct Params { blocks: u32, C: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pw: array<f32>;           // [blocks, C]
@group(0) @binding(2) var<storage, read> pb: array<f32>;           // [blocks, C]
@group(0) @binding(3) var<storage, read_write> dw: array<f32>;     // [C]
@group(0) @binding(4) var<storage, read_write> db: array<f32>;     // [C]
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let c = gid.x;
  if (c >= p.C) { return; }
  var sw = 0.0;
  var sb = 0.0;
  for (var k = 0u; k < p.blocks; k = k + 1u) {
    sw = sw + pw[k * p.C + c];
    sb = sb + pb[k * p.C + c];
  }
  dw[c] = sw;
  db[c] = sb;
}`,
  grid: ({ C }) => [ceilDiv(C!, 64)],
  minSizes: ({ blocks, C }) => ({ pw: blocks! * C!, pb: blocks! * C!, dw: C!, db: C! }),
  loopTrips: ({ blocks }) => loopCost(blocks!),
});

// Long rows (the fused kernel's two serial loops over D per thread would pass llvmpipe's loop budget): dx as a
// row program (thread or workgroup per row, chunked like softmax), the dw/db partials one thread per (block, c).
const lnBwdDx = rowProgram(
  {
    name: 'layernorm_bwd_dx',
    doc: '// dx = rstd * (g*w - mean(g*w) - xhat * mean(g*w*xhat)) per row, xhat = (x - mean) * rstd (saved mean, rstd).',
    decls: /* wgsl */ `struct Params { rows: u32, C: u32 }
${BWD_DECLS}`,
    pre: 'let u = mean[row]; let r = rstd[row];',
    passes: [
      { op: 'sum', out: 'a', expr: 'gy[base + c] * w[c]', then: 'let am = a / f32(p.C);' },
      { op: 'sum', out: 'bb', expr: '(gy[base + c] * w[c]) * ((x[base + c] - u) * r)', then: 'let bm = bb / f32(p.C);' },
    ],
    each: 'dx[base + c] = r * ((gy[base + c] * w[c]) - am - ((x[base + c] - u) * r) * bm);',
  },
  ({ rows, C }) => ({ x: rows! * C!, w: C!, gy: rows! * C!, mean: rows!, rstd: rows!, dx: rows! * C! }),
);

const lnPart = defineKernel({
  name: 'layernorm_bwd_part',
  foldable: true,
  wgsl: /* wgsl */ `
// pw[blk, c] = sum over the block's rows of gy * xhat, pb[blk, c] = sum of gy (rows in order). One thread per
// (block of ${WG} rows, column).
const WG = ${WG}u;
struct Params { rows: u32, C: u32, blocks: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;            // [rows, C]
@group(0) @binding(2) var<storage, read> gy: array<f32>;           // [rows, C]
@group(0) @binding(3) var<storage, read> mean: array<f32>;         // [rows]
@group(0) @binding(4) var<storage, read> rstd: array<f32>;         // [rows]
@group(0) @binding(5) var<storage, read_write> pw: array<f32>;     // [blocks, C]
@group(0) @binding(6) var<storage, read_write> pb: array<f32>;     // [blocks, C]
${main1d(WG)} {
  let t = ${foldedIndex(WG)};
  if (t >= p.blocks * p.C) { return; }
  let blk = t / p.C;
  let c = t - blk * p.C;
  let r0 = blk * WG;
  let r1 = min(r0 + WG, p.rows);
  var sw = 0.0;
  var sb = 0.0;
  for (var rr = r0; rr < r1; rr = rr + 1u) {
    let g = gy[rr * p.C + c];
    sw = sw + g * ((x[rr * p.C + c] - mean[rr]) * rstd[rr]);
    sb = sb + g;
  }
  pw[t] = sw;
  pb[t] = sb;
}`,
  grid: ({ blocks, C }) => [ceilDiv(blocks! * C!, 64)],
  minSizes: ({ rows, C, blocks }) => ({ x: rows! * C!, gy: rows! * C!, mean: rows!, rstd: rows!, pw: blocks! * C!, pb: blocks! * C! }),
  loopTrips: loopCost(WG),
});

export interface LayerNormOptions extends RowOptions {
  /** Official default 1e-12 (TF style; effectively 0 in f32, see the header). */
  eps?: number;
}

function checkArgs(x: Tensor, w: Tensor, b: Tensor): [number, number] {
  if (x.ndim === 0) throw new Error(`layer_norm: x ${x.describe()} needs a last dimension`);
  const D = x.shape[x.ndim - 1]!;
  for (const [n, t] of [['x', x], ['weight', w], ['bias', b]] as const) {
    if (t.dtype !== 'f32') throw new Error(`layer_norm: ${n} ${t.describe()} is not f32`);
  }
  if (w.ndim !== 1 || w.shape[0] !== D) throw new Error(`layer_norm: weight ${w.describe()} must be [${D}] for x ${x.describe()}`);
  if (b.ndim !== 1 || b.shape[0] !== D) throw new Error(`layer_norm: bias ${b.describe()} must be [${D}] for x ${x.describe()}`);
  return [D === 0 ? 0 : x.size / D, D];
}

/** Raw forward (no autograd): y [..., D], mean [rows], rstd [rows]. */
export function layerNormForward(x: Tensor, w: Tensor, b: Tensor, o: LayerNormOptions = {}): { y: Tensor; mean: Tensor; rstd: Tensor } {
  const [rows, D] = checkArgs(x, w, b);
  const y = Tensor.empty(x.shape); // [..., D]
  const mean = Tensor.empty([rows]); // [rows]
  const rstd = Tensor.empty([rows]); // [rows]
  runRow(lnFwd, rows, D, { x, w, b, y, mean, rstd }, { eps: o.eps ?? 1e-12 }, o);
  return { y, mean, rstd };
}

/** Raw backward (no autograd): dx [..., D] and dw, db [D] (each only when asked for). */
export function layerNormBackward(
  x: Tensor,
  w: Tensor,
  mean: Tensor,
  rstd: Tensor,
  gy: Tensor,
  want: { dx: boolean; dwdb: boolean } = { dx: true, dwdb: true },
): { dx: Tensor | null; dw: Tensor | null; db: Tensor | null } {
  const D = w.size;
  const rows = mean.size;
  const blocks = ceilDiv(rows, WG);
  const dx = want.dx ? Tensor.empty(x.shape) : null; // [..., D]
  const dw = want.dwdb ? Tensor.empty([D]) : null; // [D]
  const db = want.dwdb ? Tensor.empty([D]) : null; // [D]
  if (rows === 0 || D === 0 || (!want.dx && !want.dwdb)) {
    if (dw && D) {
      fillInPlace(dw, 0);
      fillInPlace(db!, 0);
    }
    return { dx, dw, db };
  }
  // One block: the partials are the result. Unused outputs get a 1-element scratch (bindings must exist and
  // writable bindings may not alias).
  const direct = blocks === 1;
  const v4 = vec4Count(D, x, w, gy) > 0;
  const lnBwd = lnBwdKernels[v4 ? 1 : 0]!; // vec4 columns when D allows
  const scratch = v4 ? 4 : 1; // an unused output: one binding element
  const pw = want.dwdb ? (direct ? dw! : Tensor.empty([blocks * D])) : Tensor.empty([scratch]); // [blocks, D]
  const pb = want.dwdb ? (direct ? db! : Tensor.empty([blocks * D])) : Tensor.empty([scratch]); // [blocks, D]
  const dxOut = dx ?? Tensor.empty([scratch]);
  const flags = (want.dx ? 1 : 0) | (want.dwdb ? 2 : 0);
  if (lnBwd.fitsLoopBudget({ rows, C: D, flags })) {
    lnBwd.run({ x, w, gy, mean, rstd, dx: dxOut, pw, pb }, { rows, C: D, flags });
  } else {
    // Rows too long for one invocation's loop budget (llvmpipe: 65,535 iterations): split as above.
    if (want.dx) runRow(lnBwdDx, rows, D, { x, w, gy, mean, rstd, dx: dxOut }, {});
    if (want.dwdb) lnPart.run({ x, gy, mean, rstd, pw, pb }, { rows, C: D, blocks });
  }
  if (want.dwdb && !direct) {
    if (lnDwDb.fitsLoopBudget({ blocks, C: D })) lnDwDb.run({ pw, pb, dw: dw!, db: db! }, { blocks, C: D });
    else {
      // More blocks than one serial loop may run: reduce.ts's chunked sum over the block axis.
      for (const [part, out] of [[pw, dw!], [pb, db!]] as const) {
        const v = part.view([blocks, D]); // [blocks, D]
        const s = sumTo(v, [D]); // [D]
        copyInto(out, s);
        v.dispose();
        s.dispose();
      }
    }
  }
  if (pw !== dw) pw.dispose();
  if (pb !== db) pb.dispose();
  if (dxOut !== dx) dxOut.dispose();
  return { dx, dw, db };
}

const layerNormOp = defineOp<LayerNormOptions>({
  name: 'layer_norm',
  forward(ctx, [x, w, b], o) {
    const { y, mean, rstd } = layerNormForward(x!, w!, b!, o); // [..., D], [rows], [rows]
    ctx.save(x!, w!, mean, rstd);
    mean.dispose();
    rstd.dispose();
    return y;
  },
  backward(ctx, gy) {
    const [x, w, mean, rstd] = ctx.saved as [Tensor, Tensor, Tensor, Tensor];
    const need = ctx.needsGrad;
    const { dx, dw, db } = layerNormBackward(x, w, mean, rstd, gy, { dx: need[0]!, dwdb: need[1]! || need[2]! });
    return [dx, dw, db];
  },
});

/** TF-style layer norm over the last axis (official S3-Rec): w * (x - mean) / sqrt(biased var + eps) + b. */
export function layerNorm(x: Tensor, weight: Tensor, bias: Tensor, o: LayerNormOptions = {}): Tensor {
  return layerNormOp.apply([x, weight, bias], o);
}

// ------------------------------------------------------------------ float64 reference
function stats(x: F64, D: number, r: number, eps: number): [number, number] {
  const k = x.data[r * D]!;
  let s1 = 0;
  for (let c = 0; c < D; c++) s1 += x.data[r * D + c]! - k;
  const u = k + s1 / D;
  let s2 = 0;
  for (let c = 0; c < D; c++) s2 += (x.data[r * D + c]! - u) ** 2;
  return [u, 1 / Math.sqrt(s2 / D + eps)];
}

export function refLayerNorm(x: F64, w: F64, b: F64, eps = 1e-12): F64 {
  const D = w.data.length;
  const rows = D === 0 ? 0 : x.data.length / D;
  const y = new Float64Array(x.data.length);
  for (let r = 0; r < rows; r++) {
    const [u, rs] = stats(x, D, r, eps);
    for (let c = 0; c < D; c++) y[r * D + c] = w.data[c]! * ((x.data[r * D + c]! - u) * rs) + b.data[c]!;
  }
  return { data: y, shape: [...x.shape] };
}

/** [dx, dw, db] of sum(gy * layerNorm(x, w, b)). */
export function refLayerNormGrad(x: F64, w: F64, _b: F64, gy: F64, eps = 1e-12): [F64, F64, F64] {
  const D = w.data.length;
  const rows = D === 0 ? 0 : x.data.length / D;
  const dx = new Float64Array(x.data.length);
  const dw = new Float64Array(D);
  const db = new Float64Array(D);
  for (let r = 0; r < rows; r++) {
    const [u, rs] = stats(x, D, r, eps);
    let a = 0;
    let bb = 0;
    for (let c = 0; c < D; c++) {
      const i = r * D + c;
      const xh = (x.data[i]! - u) * rs;
      const g = gy.data[i]! * w.data[c]!;
      a += g;
      bb += g * xh;
      dw[c]! += gy.data[i]! * xh;
      db[c]! += gy.data[i]!;
    }
    a /= D;
    bb /= D;
    for (let c = 0; c < D; c++) {
      const i = r * D + c;
      const xh = (x.data[i]! - u) * rs;
      dx[i] = rs * (gy.data[i]! * w.data[c]! - a - xh * bb);
    }
  }
  return [
    { data: dx, shape: [...x.shape] },
    { data: dw, shape: [D] },
    { data: db, shape: [D] },
  ];
}
