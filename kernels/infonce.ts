// kernels/infonce.ts — infonce: fused batched InfoNCE (softmax cross-entropy over sampled or dense candidates),
// forward + backward (the table gradient through scatter.ts's deterministic row index / rows scatter).
//
// Computes (per valid row n, w_n = mask[n], default 1; rows with w_n == 0 contribute nothing):
//   s[n, c] = <q[n], table[id(n, c)]> / tau           id(n, c) = clamp(cand[n, c], 0, V-1)   (ids form)
//                                                      id(n, c) = c, C = M                     (dense form)
//   lse[n]  = logsumexp_c s[n, c]
//   loss    = sum_n w_n (lse[n] - s[n, pos_n]) / den   pos_n = clamp(pos[n], 0, C-1), default 0 (ids form);
//                                                      pos_n = clamp(targets[n], 0, M-1)   (dense form)
//   den     = sum_n w_n for reduction 'mean' (1 when that is 0: the loss is then 0), 1 for 'sum'.
// Shapes: q [N, D], table [V, D] (or cands [M, D]), cand [N, C] i32, pos/targets [N] i32, mask [N] f32 -> loss [].
// Backward (saves lse as (max, log-sum) [2, N], w [N], den [1]; never the [N, C] probabilities): g_n = gy * w_n / den,
//   coef[n, c] = g_n (softmax(s[n])_c - 1[c == pos_n]) / tau   (logits recomputed from q and the table),
//   dq[n]      = sum_c coef[n, c] table[id(n, c)],
//   dtable[v]  = sum_{(n, c): id(n, c) = v} coef[n, c] q[n]  -- a deterministic segment sum (row index below),
//   dcands[m]  = sum_n coef[n, m] q[n]                       -- dense form: a column sum, no index needed.
// Parallel strategy (llvmpipe runs a workgroup as SIMD fibers on one core; barriers are expensive and every
//   storage load is a per-lane scalar loop, so the kernels are barrier-free and keep rows in registers; the same
//   shapes are ordinary register-blocked kernels on a real GPU): one thread per row with q[n] in registers for
//   the logits (online max/sum over C, no barriers); one thread per row for the backward, which reloads each
//   candidate row once, recomputes its logit, writes coef and accumulates dq in registers; one thread per table
//   row for the scatter (the row's sum in registers). The row width D is baked into each kernel as a WGSL const
//   (kernels named `{D=64}`), vec4 loads when D % 4 == 0. Masked rows cost one weight read and their stores.
// Memory traffic: forward reads N*C*D (gathered rows) + N*D + N*C ids, writes 4N floats; backward reads the
//   gathered rows once more, writes N*C coefs and N*D (dq); the scatter reads M valid entries' q rows and writes
//   V*D (dtable, every row written). Random row gathers from the [V, D] table dominate on llvmpipe.
// Table gradient (ids form): scatter.ts's buildRowIndex (the entries e = (n, c) grouped by table id, ascending e;
//   entries of masked rows dropped) and scatterRows (rows_scatter{D}: one thread per table row, fixed order,
//   bit-reproducible, no float atomics; linear in the entries for any id distribution).
// Kernels are generated per row width D (D baked in as a WGSL const so rows live in registers; vec4 loads when
//   D % 4 == 0): infonce_fwd{D=64}, infonce_bwd{D=64}; infonce_dense_dk{lanes=4|1}; the final reduction is
//   common.ts's loss_reduce (one workgroup, fixed order: per-row losses -> scalar, and the denominator).
// llvmpipe's loop budget (65,535 iterations per invocation, shared by all loops): loops over D4 <= 16 are written
// out (common.ts forSlots); at D = 150 (scalar rows) each candidate costs a thread ~153 iterations, so the
// candidate loop is cut into ranges per dispatch (online state carried in lse / rowLoss / dq); the scatter takes
// segments in pieces, the dense candidate gradient rows in ranges, loss_reduce elements in ranges. All
// bit-identical to one dispatch.
import { ceilDiv, checkIds, chunkRanges as ranges, defineOp, loopBudget, loopCost, maxLoopIterations, ref, Tensor } from '../engine/index.js';
import { concatFlat, dotvWgsl, foldedIndex, forSlots, kernelFamily, lanesFor, main1d, reduceLoss, slotsConst, slotsCost, vecType, type Lanes, type Reduction } from './common.js';
import { buildRowIndex, scatterRows } from './scatter.js';

// Moved to scatter.ts (the row index and rows scatter) and common.ts (Reduction); re-exported here for imports
// written before the move.
export type { Reduction } from './common.js';

type F64 = ref.F64;
const WG = 64;

// ------------------------------------------------------------------ infonce kernels
// Candidates [c0, c1) per dispatch: more candidates than one invocation's loop budget allows (D = 150 rows loop
// over D inside the candidate loop) take several dispatches; the online state (max, sum, positive logit; dq)
// is carried in the outputs between them, in the same order as one dispatch (bit-identical).
/** The uniform and the inputs (bindings 0-4) of the forward and backward kernels. */
const INFONCE_INPUTS = (T: string): string => /* wgsl */ `struct Params { N: u32, C: u32, V: u32, invTau: f32, dense: u32, hasPos: u32, hasMask: u32, c0: u32, c1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<${T}>;      // [N, D]
@group(0) @binding(2) var<storage, read> table: array<${T}>;  // [V, D] (dense: [C, D])
@group(0) @binding(3) var<storage, read> cand: array<i32>;        // [N, C] (dense: unused)
@group(0) @binding(4) var<storage, read> pos: array<i32>;         // [N] positive column (hasPos)`;
const INFONCE_FNS = (l: Lanes): string => /* wgsl */ `
${dotvWgsl(l)}
fn cand_id(n: u32, c: u32) -> u32 {
  if (p.dense == 1u) { return c; }
  return u32(clamp(cand[n * p.C + c], 0, i32(p.V) - 1));
}
fn pos_col(n: u32) -> u32 {
  if (p.hasPos == 0u) { return 0u; }
  return u32(clamp(pos[n], 0, i32(p.C) - 1));
}`;

/** Forward, one thread per row with q[n] in registers, D baked in: `infonce_fwd{D=64}`. */
const infonceFwdKernel = kernelFamily('infonce_fwd', ({ D }: { D: number }) => {
  const l = lanesFor(D);
  const T = vecType(l);
  return {
    foldable: true,
    wgsl: /* wgsl */ `
// One thread per row, q[n] in registers: online max/sum over the C logits (no barriers), lse and the
// weighted row loss.
${INFONCE_INPUTS(T)}
@group(0) @binding(5) var<storage, read> mask: array<f32>;        // [N] row weights (hasMask)
@group(0) @binding(6) var<storage, read_write> lse: array<f32>;     // [2, N]: row max m, then log sum exp(s - m)
@group(0) @binding(7) var<storage, read_write> rowLoss: array<f32>; // [N] w * (lse - s_pos)
@group(0) @binding(8) var<storage, read_write> rowW: array<f32>;    // [N] w
${slotsConst(D)}
${INFONCE_FNS(l)}
${main1d(WG)} {
  let i = ${foldedIndex(WG)};
  if (i >= p.N) { return; }
  var w = 1.0;
  if (p.hasMask == 1u) { w = mask[i]; }
  rowW[i] = w;
  if (w == 0.0) { lse[i] = 0.0; lse[p.N + i] = 0.0; rowLoss[i] = 0.0; return; }
  var qr: array<${T}, D4>;
  ${forSlots(D / l, 'qr[{k}] = q[i * D4 + {k}];')}
  let pc = pos_col(i);
  var m = -3.4028234663852886e38;
  var s = 0.0;
  var sp = 0.0;
  if (p.c0 != 0u) { m = lse[i]; s = lse[p.N + i]; sp = rowLoss[i]; }
  for (var c = p.c0; c < p.c1; c = c + 1u) {
    let tr = cand_id(i, c) * D4;
    var a = 0.0;
    ${forSlots(D / l, 'a = a + dotv(qr[{k}], table[tr + {k}]);')}
    let x = a * p.invTau;
    if (c == pc) { sp = x; }
    if (x > m) { s = s * exp(m - x) + 1.0; m = x; } else { s = s + exp(x - m); }
  }
  if (p.c1 < p.C) { lse[i] = m; lse[p.N + i] = s; rowLoss[i] = sp; return; }
  // lse is kept as (m, log s): m + log(s) would round log(s) to the ulp of m (0.5 at |m| ~ 4e6), which
  // breaks the probabilities of tied or near-tied logits at large magnitudes.
  let ls = log(s);
  lse[i] = m;
  lse[p.N + i] = ls;
  rowLoss[i] = w * ((m - sp) + ls);
}`,
    grid: ({ N }) => [ceilDiv(N!, WG)],
    minSizes: ({ N }) => ({ q: N! * (D / l), pos: N!, mask: N!, lse: 2 * N!, rowLoss: N!, rowW: N! }),
    loopTrips: ({ c0, c1 }) => infonceFwdTrips(D, c1! - c0!),
  };
});

/** Backward, one thread per row (coef for the table scatter, dq in registers), D baked in: `infonce_bwd{D=64}`. */
const infonceBwdKernel = kernelFamily('infonce_bwd', ({ D }: { D: number }) => {
  const l = lanesFor(D);
  const T = vecType(l);
  return {
    foldable: true,
    wgsl: /* wgsl */ `
// One thread per row; q[n], the current candidate row and dq[n] in registers. For each candidate: reload its
// row once, recompute the logit (same code as the forward), coef = g_n (exp((s - m) - logsum) - 1[c == pos])
// / tau (written for the table scatter), dq += coef * row.
${INFONCE_INPUTS(T)}
@group(0) @binding(5) var<storage, read> saved: array<f32>;       // [3N + 1]: w [N], m [N], logsum [N], den
@group(0) @binding(6) var<storage, read> gy: array<f32>;          // [1]
@group(0) @binding(7) var<storage, read_write> coef: array<f32>;  // [N, C]
@group(0) @binding(8) var<storage, read_write> dq: array<${T}>; // [N, D]
${slotsConst(D)}
${INFONCE_FNS(l)}
${main1d(WG)} {
  let i = ${foldedIndex(WG)};
  if (i >= p.N) { return; }
  let w = saved[i];
  var acc: array<${T}, D4>;
  if (w == 0.0) {
    for (var c = p.c0; c < p.c1; c = c + 1u) { coef[i * p.C + c] = 0.0; }
    ${forSlots(D / l, 'dq[i * D4 + {k}] = acc[{k}];')}
    return;
  }
  if (p.c0 != 0u) { ${forSlots(D / l, 'acc[{k}] = dq[i * D4 + {k}];')} }
  let g = gy[0] * w / saved[3u * p.N] * p.invTau;
  let pc = pos_col(i);
  let m = saved[p.N + i];
  let ls = saved[2u * p.N + i];
  var qr: array<${T}, D4>;
  ${forSlots(D / l, 'qr[{k}] = q[i * D4 + {k}];')}
  for (var c = p.c0; c < p.c1; c = c + 1u) {
    let tr = cand_id(i, c) * D4;
    var row: array<${T}, D4>;
    var a = 0.0;
    ${forSlots(D / l, 'row[{k}] = table[tr + {k}]; a = a + dotv(qr[{k}], row[{k}]);')}
    let cf = g * (exp((a * p.invTau - m) - ls) - select(0.0, 1.0, c == pc));
    coef[i * p.C + c] = cf;
    ${forSlots(D / l, 'acc[{k}] = acc[{k}] + cf * row[{k}];')}
  }
  ${forSlots(D / l, 'dq[i * D4 + {k}] = acc[{k}];')}
}`,
    grid: ({ N }) => [ceilDiv(N!, WG)],
    minSizes: ({ N, C }) => ({ q: N! * (D / l), pos: N!, saved: 3 * N! + 1, gy: 1, coef: N! * C!, dq: N! * (D / l) }),
    loopTrips: ({ c0, c1 }) => infonceBwdTrips(D, c1! - c0!),
  };
});

/** Dense form: the candidate matrix's gradient, a column sum over the rows: `infonce_dense_dk{lanes=4}`. */
const infonceDenseDkKernel = kernelFamily('infonce_dense_dk', ({ lanes: l }: { lanes: Lanes }) => {
  const T = vecType(l);
  return {
    foldable: true,
    wgsl: /* wgsl */ `
// dcands[m, k] = sum_n coef[n, m] * q[n, k] (rows in ascending order). One thread per (candidate, chunk of D).
// Rows [n0, n1) per dispatch (past the loop budget: several, continuing from dk; bit-identical).
struct Params { N: u32, M: u32, D4: u32, n0: u32, n1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<${T}>;          // [N, D]
@group(0) @binding(2) var<storage, read> coef: array<f32>;            // [N, M]
@group(0) @binding(3) var<storage, read_write> dk: array<${T}>;    // [M, D]
${main1d(WG)} {
  let i = ${foldedIndex(WG)};
  if (i >= p.M * p.D4) { return; }
  let m = i / p.D4;
  let k = i % p.D4;
  var acc = ${T}(0.0);
  if (p.n0 != 0u) { acc = dk[i]; }
  for (var n = p.n0; n < p.n1; n = n + 1u) { acc = acc + coef[n * p.M + m] * q[n * p.D4 + k]; }
  dk[i] = acc;
}`,
    grid: ({ M, D4 }) => [ceilDiv(M! * D4!, WG)],
    minSizes: ({ N, M, D4 }) => ({ q: N! * D4!, coef: N! * M!, dk: M! * D4! }),
    loopTrips: ({ n0, n1 }) => loopCost(n1! - n0!),
  };
});

/** Loop cost of the forward / backward kernels for `n` candidates of width D (the D4 loops nest in the candidate loop). */
function infonceFwdTrips(D: number, n: number): number {
  const d4 = D / lanesFor(D);
  return slotsCost(d4) + loopCost(n, slotsCost(d4));
}
function infonceBwdTrips(D: number, n: number): number {
  const d4 = D / lanesFor(D);
  return Math.max(loopCost(n) + slotsCost(d4), 3 * slotsCost(d4) + loopCost(n, 2 * slotsCost(d4)));
}
/** The most candidates one dispatch may take under the loop budget (Infinity: no limit). */
function candidatesPerDispatch(trips: (D: number, n: number) => number, D: number): number {
  const budget = loopBudget();
  if (!Number.isFinite(budget)) return Infinity;
  const per = trips(D, 1) - trips(D, 0); // cost per candidate
  let n = Math.max(1, Math.floor((budget - trips(D, 0)) / per));
  while (n > 1 && trips(D, n) > budget) n--;
  return n;
}

// ------------------------------------------------------------------ the op
interface InfonceAttrs {
  temperature: number;
  reduction: Reduction;
  dense: boolean;
  hasPos: boolean;
  hasMask: boolean;
}

const infonceOp = defineOp<InfonceAttrs>({
  name: 'infonce',
  forward(ctx, inputs, a) {
    const [q, table, cand] = inputs as [Tensor, Tensor, Tensor];
    const pos = a.hasPos ? inputs[3]! : null;
    const mask = a.hasMask ? inputs[a.hasPos ? 4 : 3]! : null;
    const what = a.dense ? 'infonceDense' : 'infonce';
    if (q.ndim !== 2 || table.ndim !== 2 || q.shape[1] !== table.shape[1]) throw new Error(`${what}: q ${q.describe()} and ${a.dense ? 'cands' : 'table'} ${table.describe()} must be [N, D] and [${a.dense ? 'M' : 'V'}, D]`);
    const [N, D] = q.shape as [number, number];
    const V = table.shape[0]!;
    if (N === 0 || D === 0 || V === 0) throw new Error(`${what}: empty input (q ${q.describe()}, ${table.describe()})`);
    const C = a.dense ? V : cand.shape[1]!;
    if (!a.dense && (cand.dtype !== 'i32' || cand.ndim !== 2 || cand.shape[0] !== N || C === 0)) throw new Error(`infonce: cand ${cand.describe()} must be i32 [${N}, C] with C >= 1`);
    if (pos && (pos.dtype !== 'i32' || pos.size !== N)) throw new Error(`${what}: ${a.dense ? 'targets' : 'pos'} ${pos.describe()} must be i32 [${N}]`);
    if (mask && (mask.dtype !== 'f32' || mask.size !== N)) throw new Error(`${what}: mask ${mask.describe()} must be f32 [${N}]`);
    if (q.dtype !== 'f32' || table.dtype !== 'f32') throw new Error(`${what}: q and table must be f32`);
    if (!(a.temperature > 0) || !Number.isFinite(a.temperature)) throw new Error(`${what}: temperature ${a.temperature} must be a positive number`);
    const params = { N, C, V, invTau: 1 / a.temperature, dense: a.dense ? 1 : 0, hasPos: pos ? 1 : 0, hasMask: mask ? 1 : 0 };
    const lse = Tensor.empty([2, N]); // [2, N]: row max, log-sum
    const rowLoss = Tensor.empty([N]); // [N]
    const rowW = Tensor.empty([N]); // [N]
    // Absent optional inputs bind another read-only tensor of the right dtype (never read: hasPos/hasMask = 0).
    const fwd = infonceFwdKernel({ D });
    for (const [c0, c1] of ranges(C, candidatesPerDispatch(infonceFwdTrips, D))) {
      fwd.run({ q, table, cand, pos: pos ?? cand, mask: mask ?? q, lse, rowLoss, rowW }, { ...params, c0, c1 });
    }
    const { loss, den } = reduceLoss({ t: rowLoss }, { t: rowW }, a.reduction === 'mean');
    rowLoss.dispose();
    if (ctx.recording) {
      // [3N + 1]: w, m, logsum, den in one buffer (keeps the backward kernel within 9 bindings; w first so the
      // buffer doubles as the row-weight binding of the row index).
      const saved = concatFlat([rowW, lse, den]); // [3N + 1]
      ctx.save(q, table, cand, pos ?? cand, saved);
      saved.dispose();
      ctx.extra.dims = { N, C, V, D };
    }
    lse.dispose();
    rowW.dispose();
    den.dispose();
    return loss;
  },
  backward(ctx, gy) {
    const [q, table, cand, pos, saved] = ctx.saved as [Tensor, Tensor, Tensor, Tensor, Tensor];
    const a = ctx.attrs;
    const { N, C, V, D } = ctx.extra.dims as { N: number; C: number; V: number; D: number };
    const l = lanesFor(D);
    const coef = Tensor.empty([N, C]); // [N, C]
    const dq = Tensor.empty([N, D]); // [N, D] (written even when q needs no gradient: it costs one store per row)
    const params = { N, C, V, invTau: 1 / a.temperature, dense: a.dense ? 1 : 0, hasPos: a.hasPos ? 1 : 0, hasMask: a.hasMask ? 1 : 0 };
    const bwd = infonceBwdKernel({ D });
    for (const [c0, c1] of ranges(C, candidatesPerDispatch(infonceBwdTrips, D))) {
      bwd.run({ q, table, cand, pos, saved, gy, coef, dq }, { ...params, c0, c1 });
    }
    let dt: Tensor | null = null;
    if (ctx.needsGrad[1]) {
      if (a.dense) {
        dt = Tensor.empty([V, D]); // [M, D]
        for (const [n0, n1] of ranges(N, maxLoopIterations(loopBudget()))) {
          infonceDenseDkKernel({ lanes: l }).run({ q, coef, dk: dt }, { N, M: V, D4: D / l, n0, n1 });
        }
      } else {
        const index = buildRowIndex(cand, null, C, V, saved);
        dt = scatterRows(index, coef, q, D); // [V, D]
        index.dispose();
      }
    }
    coef.dispose();
    let dqOut: Tensor | null = dq;
    if (!ctx.needsGrad[0]) {
      dq.dispose();
      dqOut = null;
    }
    const grads: Array<Tensor | null> = [dqOut, dt, null];
    if (a.hasPos) grads.push(null);
    if (a.hasMask) grads.push(null);
    return grads;
  },
});

export interface InfonceOptions {
  /** Logits are divided by this (default 1). */
  temperature?: number;
  /** Column of cand holding the positive, per row: i32 [N] (default: column 0). Clamped to [0, C). */
  pos?: Tensor;
  /** Row weights f32 [N] (usually 0/1 validity); rows with 0 contribute nothing and get zero gradients. */
  mask?: Tensor;
  /** 'mean' (default): divide by the sum of the weights (loss 0 when it is 0); 'sum': no division. */
  reduction?: Reduction;
}

/**
 * InfoNCE over sampled candidates: q [N, D], table [V, D], cand [N, C] i32 ids in [0, V) (checked on the GPU; clamped
 * with CHECK_IDS=0) -> loss [].
 * Gradients to q and table (deterministic scatter into the table rows).
 */
export function infonce(q: Tensor, table: Tensor, cand: Tensor, opts: InfonceOptions = {}): Tensor {
  checkIds(cand, table.shape[0] ?? 0, 'infonce', 'candidate id'); // outside [0, V): an error at the next sync (CHECK_IDS=0: clamped)
  const inputs = [q, table, cand];
  if (opts.pos) inputs.push(opts.pos);
  if (opts.mask) inputs.push(opts.mask);
  return infonceOp.apply(inputs, {
    temperature: opts.temperature ?? 1,
    reduction: opts.reduction ?? 'mean',
    dense: false,
    hasPos: !!opts.pos,
    hasMask: !!opts.mask,
  });
}

export type InfonceDenseOptions = Omit<InfonceOptions, 'pos'>;

/**
 * InfoNCE against a shared dense candidate matrix (in-batch negatives): q [N, D], cands [M, D], targets [N] i32
 * (the positive's row of cands, clamped to [0, M)) -> loss []. Gradients to q and cands.
 */
export function infonceDense(q: Tensor, cands: Tensor, targets: Tensor, opts: InfonceDenseOptions = {}): Tensor {
  const inputs = [q, cands, targets, targets];
  if (opts.mask) inputs.push(opts.mask);
  return infonceOp.apply(inputs, {
    temperature: opts.temperature ?? 1,
    reduction: opts.reduction ?? 'mean',
    dense: true,
    hasPos: true,
    hasMask: !!opts.mask,
  });
}

// ------------------------------------------------------------------ float64 references
export interface RefInfonceOptions {
  temperature?: number;
  reduction?: Reduction;
  /** [N] positive column (ids form; default 0) or the targets (dense form). */
  pos?: F64 | null;
  mask?: F64 | null;
  /** cand is ignored and every row scores all table rows (infonceDense). */
  dense?: boolean;
}

const clampInt = (x: number, lo: number, hi: number): number => Math.min(Math.max(Math.trunc(x), lo), hi);

interface InfonceRows {
  N: number;
  C: number;
  D: number;
  id: (n: number, c: number) => number;
  pc: (n: number) => number;
  w: (n: number) => number;
  s: (n: number, c: number) => number;
}

function infonceRows(q: F64, table: F64, cand: F64 | null, o: RefInfonceOptions): InfonceRows {
  const [N, D] = q.shape as [number, number];
  const V = table.shape[0]!;
  const C = o.dense ? V : cand!.shape[1]!;
  const inv = 1 / (o.temperature ?? 1);
  const id = (n: number, c: number): number => (o.dense ? c : clampInt(cand!.data[n * C + c]!, 0, V - 1));
  return {
    N,
    C,
    D,
    id,
    pc: (n) => (o.pos ? clampInt(o.pos.data[n]!, 0, C - 1) : 0),
    w: (n) => (o.mask ? o.mask.data[n]! : 1),
    s: (n, c) => {
      const r = id(n, c);
      let acc = 0;
      for (let d = 0; d < D; d++) acc += q.data[n * D + d]! * table.data[r * D + d]!;
      return acc * inv;
    },
  };
}

function lseOf(xs: number[]): number {
  const m = Math.max(...xs);
  let s = 0;
  for (const x of xs) s += Math.exp(x - m);
  return m + Math.log(s);
}

/** Float64 InfoNCE loss (shape []): see the header. */
export function refInfonce(q: F64, table: F64, cand: F64 | null, o: RefInfonceOptions = {}): F64 {
  const R = infonceRows(q, table, cand, o);
  let L = 0;
  let W = 0;
  for (let n = 0; n < R.N; n++) {
    const w = R.w(n);
    W += w;
    if (w === 0) continue;
    const s = Array.from({ length: R.C }, (_, c) => R.s(n, c));
    L += w * (lseOf(s) - s[R.pc(n)]!);
  }
  const den = (o.reduction ?? 'mean') === 'mean' && W !== 0 ? W : 1;
  return { data: Float64Array.of(L / den), shape: [] };
}

/** Float64 gradients of refInfonce times gy: [dq, dtable]. */
export function refInfonceGrad(q: F64, table: F64, cand: F64 | null, o: RefInfonceOptions, gy: number): [F64, F64] {
  const R = infonceRows(q, table, cand, o);
  const inv = 1 / (o.temperature ?? 1);
  const dq = ref.zerosF64(q.shape);
  const dt = ref.zerosF64(table.shape);
  let W = 0;
  for (let n = 0; n < R.N; n++) W += R.w(n);
  const den = (o.reduction ?? 'mean') === 'mean' && W !== 0 ? W : 1;
  const D = R.D;
  for (let n = 0; n < R.N; n++) {
    const w = R.w(n);
    if (w === 0) continue;
    const s = Array.from({ length: R.C }, (_, c) => R.s(n, c));
    const l = lseOf(s);
    const g = (gy * w) / den;
    for (let c = 0; c < R.C; c++) {
      const cf = g * inv * (Math.exp(s[c]! - l) - (c === R.pc(n) ? 1 : 0));
      const r = R.id(n, c);
      for (let d = 0; d < D; d++) {
        dq.data[n * D + d]! += cf * table.data[r * D + d]!;
        dt.data[r * D + d]! += cf * q.data[n * D + d]!;
      }
    }
  }
  return [dq, dt];
}
