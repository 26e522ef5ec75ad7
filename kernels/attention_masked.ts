// kernels/attention_masked.ts — fused masked multi-head attention, forward + backward, padded and varlen.
//
// Computes (official S3-Rec `modules.SelfAttention`, AttRec `_distance_self_attention`):
//   z[i, j]   = (q_i . k_j) * scale + fill * masked(i, j)          scale = 1/sqrt(D) by default
//   P[i, :]   = softmax_j(z[i, :])
//   A[i, j]   = P[i, j] * M[i, j]       M = dropout keep/(1-p) (inverted, seeded), and 0 on i == j (AttRec flag)
//   out_i     = sum_j A[i, j] v_j
// Padded mode: q, k, v, out [B, H, L, D]; ids [B, L] (u32 or i32, 0 = padding; optional).
//   masked(i, j) = ids[b, j] == 0 || (causal && j > i). The mask is ADDITIVE, as in the official code
//   (`(1 - m) * fill`, fill -10000 fine-tuning, -1e8 pretraining): a row whose keys are all masked is
//   softmax(s + fill) = softmax(s) (shift invariance), never NaN. The kernel removes that common shift before
//   rounding (it adds fill only in rows with at least one visible key), so such rows get the exact-math value
//   softmax(s) in f32 too; f32 `s + (-1e8)` would otherwise round the scores away (steps of 8).
//   No [B, H, L, L] mask is materialised: the mask is rebuilt from ids and i, j (nor any score tensor, unless
//   the storeScores variant is asked for).
// Varlen mode: q, k, v, out [T, H, D] packed tokens (T = real tokens, sequences back to back), and one i32 index
//   vidx = [offsets (B+1) | seq_of (T): sequence of each token | blocks (NB): first token of each thread's
//   R-row block] (one upload per batch and R, cached on the layout; section starts in the params). Keys are
//   the real tokens of the query's own sequence, j <= i when causal (left padding puts the real tokens in the
//   last slots, so pad keys are exactly the absent ones). Masked keys are absent (weight exactly 0): equal to
//   the padded run wherever the masked logits underflow there (z - lse < -88), i.e. whenever score ranges are
//   << |fill|.
// Dropout: u = rng_uniform(seed, offset, idx) with idx the linear index of (b, h, i, j) in the PADDED
//   [B, H, Lp, Lp] layout (varlen maps tokens to their padded slots), drop when u < p. Same seed -> same mask,
//   and varlen draws exactly the padded run's mask.
//
// Parallel strategy (no atomics, no workgroup memory, no barriers): one thread owns R = attentionRowsPerThread(D) = 4
//   consecutive rows of one (sequence, head) (query rows: fwd, dq; key rows: dk, dv) and loops over the other
//   side's rows, keeping its R rows and accumulators in registers. Why: on llvmpipe (Mesa 22.3) every storage
//   load in a loop is a per-lane scalar loop whatever the address pattern, so the only lever is reuse: each K/V
//   (Q/dO) row a thread loads feeds R rows. The WGSL is generated with D baked in (one pipeline per D and R;
//   vec4 loads when D % 4 == 0) and unrolled over the R rows and the D/4 slots (constant indices keep private
//   arrays in registers); D > 32 (AttRec's 150) loops over d instead (unrolled it took minutes to compile).
//   On a real GPU this is a register-blocked FlashAttention without shared memory (L <= 64 fits in L1).
//   llvmpipe's loop budget (65,535 iterations per invocation, shared by all its loops): at D > 32 every key
//   (query) row costs a thread ~5 loops over d (~760 iterations at D = 150), so the loop over the other side's
//   rows is cut into ranges [j0, j1) of one dispatch each (none at the model shapes): the forward carries its
//   online-softmax state in out (unnormalised) and stats (running max, sum), the backward its unscaled dq / dk,
//   dv.
//   fwd: online softmax over the keys (running max m, sum l; the accumulators rescaled when m grows), weights
//        that are exactly 0 (future keys of causal rows, dropped entries) skip the V accumulation; saves
//        lse_i = m + log(l) [rows] (stats).
//   bwd_q: P_ij = exp(z_ij - lse_i) recomputed (FlashAttention), delta_i = dO_i . O_i,
//        dS_ij = P_ij (M_ij dA_ij - delta_i) with dA_ij = dO_i . v_j, dq_i = scale sum_j dS_ij k_j; writes
//        (delta_i, dO_i != 0) into stats, beside the forward's (lse_i, l_i).
//   bwd_kv: dv_j = sum_i A_ij dO_i, dk_j = scale sum_i dS_ij q_i (same recomputation, loop over query rows).
//   Rows with dO_i == 0 contribute nothing to any gradient and are skipped (bwd_q threads with no live row exit,
//   bwd_kv skips them): in a real S3-Rec step the pad positions get no upstream gradient (the losses read real
//   positions; everything after attention is per-token), so the padded backward only works on real rows.
//   Pairs with P_ij == 0 exactly skip everything but the score dot (the dot stays, for the exact additive mask).
// Per-row statistics: one buffer `stats` of vec4<f32>, one element per row (n = B*H*L padded, H*T varlen):
//   (lse_i, l_i) from the forward (between key chunks: running max m, running sum l) and (delta_i, live_i) from
//   bwd_q; then (storeScores) the scores z, rows of lz = L rounded up to a multiple of 4, four per element. bwd_kv
//   tests live_i with a one-component load (the skipped pad rows are most of a padded batch; loading the whole
//   element there measured ~2% slower at B256 L50 bidirectional) and loads the element for live rows. With
//   the varlen index in one buffer too (vidx), every kernel binds at most 8 storage buffers, WebGPU's guaranteed
//   maxStorageBuffersPerShaderStage (separate lse / lsum / delta / zs / offsets / seq_of / blocks buffers made
//   the varlen backward bind 11, 12 with stored scores, and the padded backward 9).
// Memory traffic: fwd reads q, k, v (K/V rows of a (b, h) stay in cache, L*D*8 bytes) and writes out + stats:
//   ~4*B*H*L*(4D + 4) bytes; bwd reads q, k, v, out, dO, stats and writes dq, dk, dv, (delta, live) in stats.
//   FLOPs (dense): fwd 4*B*H*L^2*D, bwd 12*B*H*L^2*D (two score recomputations: 14).
// Variants and choices, measured on this adapter (llvmpipe, 2 shared cores, B=256 H=2 L=50 D=32 causal,
// dropout 0.5; same-process round-robin medians, the machine was shared, so +-30%):
//   rows per thread R: R=2 fwd+bwd 104 ms, R=4 69 ms, R=8 65 ms (but 5-20 s cold compile per pipeline): R=4.
//   storeScores (variant, tested): the forward writes z [B, H, L, L] and the backward reads it instead of
//   recomputing q.k: 76-78 ms vs 69-71 ms recomputing. Rejected: a scalar load per pair costs more than a
//   32-term dot here. Lazy rescaling (move m only when z > m + 8) and R = 5, 6: no difference within noise.
// Against the composition of unfused engine ops and tfjs-webgpu (bench/attention.bench.ts, fwd+bwd, medians of
// 10-16 interleaved rounds in two runs at load ~3-7; pad rows with zero upstream gradient unless "dense dO"):
//   fine-tune B256 causal p0.5:     fused 52-53 ms  composed 170-281 (3.3-5.2x)  tfjs 562-735 (10.7-13.7x)
//   same, dense dO:                 fused 44-72     composed 145-199 (2.5-3.3x)
//   pretrain B100 bidir -1e8 p0.5:  fused 14-21     composed 41-68   (2.9-3.2x)  tfjs 160-287 (11-13.6x)
//   forward only (eval) B256:       fused 12-22     composed 45-75   (3.5-3.8x)  tfjs 163-299 (13.8x)
//   varlen vs padded on Beauty fine-tuning batches (1447 of 12800 slots real): kernel alone 6.3-6.6 vs
//   48-53 ms (7.6-8x); whole encoder layer 65-68 vs 448-943 ms (6.9-13.8x), outputs and all parameter
//   gradients equal on the real positions (validated by the bench).
import { ceilDiv, chunkRanges as ranges, defineOp, loopBudget, loopCost, maxLoopIterations, nextRng, pcgHash, ref, rngUniform, Tensor, type Kernel } from '../engine/index.js';
import { PCG_HASH_WGSL } from '../engine/rng.js';
import { foldedIndex, forSlots, kernelFamily, main1d, unroll } from './common.js';

type F64 = ref.F64;

const WG = 64;

export interface AttentionOptions {
  /** Mask keys j > i (fine-tuning). Default false (pretraining: padding-only, bidirectional). */
  causal?: boolean;
  /** Additive mask value for masked keys. Default -10000 (official fine-tuning); pretraining uses -1e8. */
  fill?: number;
  /** Dropout probability on the attention probabilities (inverted). Default 0. */
  dropout?: number;
  /** Dropout applies only when training (default true). */
  training?: boolean;
  /** RNG stream for dropout; default: the next offset of the global generator (`nextRng()`). */
  seed?: number;
  offset?: number;
  /** AttRec: zero the diagonal of P after the softmax, without renormalising. Default false. */
  zeroDiagonal?: boolean;
  /** Score scale; default 1/sqrt(D). */
  scale?: number;
  /** Rows per thread (register blocking); default attentionRowsPerThread(D). For benchmarks. */
  rowsPerThread?: number;
  /**
   * Variant: store the masked scores z [B, H, L, L] in the forward for the backward instead of recomputing q.k
   * there. Default false: recomputing was faster on llvmpipe (numbers in the header).
   */
  storeScores?: boolean;
}

interface Resolved {
  causal: boolean;
  fill: number;
  p: number;
  seed: number;
  offset: number;
  zeroDiagonal: boolean;
  scale: number;
}

function resolve(D: number, o: AttentionOptions): Resolved {
  const p = o.training === false ? 0 : (o.dropout ?? 0);
  if (!(p >= 0 && p <= 1)) throw new Error(`attention_masked: dropout ${p} is not in [0, 1]`);
  let seed = 0;
  let offset = 0;
  if (p > 0) {
    if (o.seed !== undefined) {
      seed = o.seed >>> 0;
      offset = o.offset ?? 0;
    } else ({ seed, offset } = nextRng());
  }
  return {
    causal: o.causal ?? false,
    fill: o.fill ?? -10000,
    p,
    seed,
    offset,
    zeroDiagonal: o.zeroDiagonal ?? false,
    scale: o.scale ?? 1 / Math.sqrt(D),
  };
}

// ------------------------------------------------------------------ WGSL
export type AttentionMode = 'padded' | 'varlen';
export type AttentionPass = 'fwd' | 'bwd_q' | 'bwd_kv';

/**
 * Rows per thread (register blocking): a thread owns R query rows (fwd, dq) or R key rows (dk, dv) of one
 * (sequence, head), so each K/V (Q/dO) row it loads feeds R rows. On llvmpipe every storage load in a loop is a
 * per-lane gather and loads dominate, so this is the main speed lever (bench numbers in the header).
 */
export function attentionRowsPerThread(D: number): number {
  return vecOf(D).NV <= UNROLL_D ? 4 : 1;
}

function vecOf(D: number): { V: string; NV: number } {
  return D % 4 === 0 ? { V: 'vec4<f32>', NV: D / 4 } : { V: 'f32', NV: D };
}

const PARAMS = /* wgsl */ `
struct Params {
  threads: u32,   // B*H*tpg (padded) or H*tpg (varlen)
  L: u32,         // padded slots per sequence (varlen: the padded layout's L, for the dropout index)
  H: u32,
  T: u32,         // varlen: packed tokens (padded: unused)
  tpg: u32,       // threads per (b, h) group (padded: ceil(L/R)); varlen: row blocks per head
  causal: u32,
  has_ids: u32,   // padded: ids given (else no padding mask)
  zero_diag: u32,
  dropout: u32,
  scale: f32,
  fill: f32,
  p: f32,         // dropout probability
  keep: f32,      // 1/(1-p) (0 when p == 1)
  rng_base: u32,  // pcg_hash(seed + pcg_hash(offset)): rng_u32(seed, offset, i) = pcg_hash(i + rng_base)
  j0: u32,        // this dispatch's range [j0, j1) of the other side's rows, relative to the group's first row:
  j1: u32,        // [0, L) in one dispatch, or chunks of it (llvmpipe's loop budget), state carried in the outputs
  zs_base: u32,   // storeScores: stats element of the first scores (rows n = B*H*L | H*T)
  lz: u32,        // storeScores: scores per row (L rounded up to a multiple of 4: an element never spans two rows)
  seq_base: u32,  // varlen: start of seq_of in vidx (B + 1)
  blk_base: u32,  // varlen: start of blocks in vidx (B + 1 + T)
}
@group(0) @binding(0) var<uniform> p: Params;`;

// Row geometry shared by all passes. A thread owns rows x0 .. x0+n-1 of one group (sequence, head); row x of
// the group lives at base + x*stride (V units), its lse/delta at lb + x; the dropout index of (i, j) is
// (gb + i + sh) * L + j + sh (the padded [B, H, L, L] linear index in both modes).
function geometry(mode: AttentionMode, NV: number, R: number): string {
  if (mode === 'padded') {
    return /* wgsl */ `
struct Geo { x0: u32, n: u32, base: u32, stride: u32, lo: u32, hi: u32, lb: u32, gb: u32, sh: u32, ids_base: u32 }
fn geo(r: u32) -> Geo {
  let bh = r / p.tpg;
  let x0 = (r % p.tpg) * ${R}u;
  return Geo(x0, min(${R}u, p.L - x0), bh * p.L * ${NV}u, ${NV}u, 0u, p.L, bh * p.L, bh * p.L, 0u, (bh / p.H) * p.L);
}
// First slot with a real id (L if none): row i has a visible key iff fv <= i (causal) or fv < L.
fn first_valid(g: Geo) -> u32 {
  if (p.has_ids == 0u) { return 0u; }
  for (var j = 0u; j < p.L; j++) {
    if (ids[g.ids_base + j] != 0u) { return j; }
  }
  return p.L;
}
fn any_visible(i: u32, fv: u32) -> bool { return select(fv < p.L, fv <= i, p.causal != 0u); }
fn key_pad(g: Geo, j: u32) -> bool { return p.has_ids != 0u && ids[g.ids_base + j] == 0u; }
// The score of row x against key y with the official additive mask (fill on padded keys and, causal, future
// ones), added only in rows that have a visible key.
fn masked_score(s: f32, vis: bool, kpad: bool, x: u32, y: u32) -> f32 {
  var z = s * p.scale;
  if (vis && (kpad || (p.causal != 0u && y > x))) { z += p.fill; }
  return z;
}`;
  }
  return /* wgsl */ `
struct Geo { x0: u32, n: u32, base: u32, stride: u32, lo: u32, hi: u32, lb: u32, gb: u32, sh: u32, ids_base: u32 }
fn geo(r: u32) -> Geo {
  let h = r / p.tpg;
  let t0 = u32(vidx[p.blk_base + r % p.tpg]);  // blocks[r % tpg]
  let b = u32(vidx[p.seq_base + t0]);          // seq_of[t0]
  let s = u32(vidx[b]);                        // offsets[b], offsets[b + 1]
  let e = u32(vidx[b + 1u]);
  // slot of token x in the padded layout = L - len + (x - s); sh = L - len - s (mod 2^32, added to x later)
  return Geo(t0, min(${R}u, e - t0), h * ${NV}u, p.H * ${NV}u, s, e, h * p.T, (b * p.H + h) * p.L, p.L - (e - s) - s, 0u);
}
fn first_valid(g: Geo) -> u32 { return 0u; }
fn any_visible(i: u32, fv: u32) -> bool { return true; }
fn key_pad(g: Geo, j: u32) -> bool { return false; }
// Masked keys are absent in varlen (the loops skip them): the score is the scaled dot.
fn masked_score(s: f32, vis: bool, kpad: bool, x: u32, y: u32) -> f32 { return s * p.scale; }`;
}

// The multiplier M[i, j] of P[i, j]: dropout keep (inverted scale) and the AttRec diagonal.
const MULT = /* wgsl */ `${PCG_HASH_WGSL}
fn mult(g: Geo, i: u32, j: u32) -> f32 {
  var m = 1.0;
  if (p.dropout != 0u) {
    let idx = (g.gb + i + g.sh) * p.L + j + g.sh;
    let u = f32(pcg_hash(idx + p.rng_base) >> 8u) * (1.0 / 16777216.0);
    m = select(p.keep, 0.0, u < p.p);
  }
  if (p.zero_diag != 0u && i == j) { m = 0.0; }
  return m;
}`;

/** The bindings after the uniform, in order: [name, element type, writable, shape comment]. */
function bindingList(mode: AttentionMode, pass: AttentionPass, V: string, storeZ: boolean): Array<[string, string, boolean, string]> {
  const X = mode === 'padded' ? '[B, H, L, D]' : '[T, H, D]';
  const R = mode === 'padded' ? 'n = B*H*L' : 'n = H*T';
  const aux: Array<[string, string, boolean, string]> =
    mode === 'padded'
      ? [['ids', 'u32', false, '[B, L] (0 = padding; a 1-element dummy without ids)']]
      : [['vidx', 'i32', false, '[B + 1 + T + NB] offsets | seq_of | blocks (first token of each R-row block)']];
  const z = storeZ ? `, then [n * lz / 4] masked scores z (${mode === 'padded' ? 'key j' : 'key j - start'}), 4 per element` : '';
  const stats = (rw: boolean, what: string): [string, string, boolean, string] => ['stats', 'vec4<f32>', rw, `${R}: [n] ${what}${z}`];
  const outputs: Record<AttentionPass, Array<[string, string, boolean, string]>> = {
    fwd: [
      ['out', V, true, X],
      stats(true, '(lse, sum, -, -), between key chunks (running max, running sum, -, -)'),
    ],
    bwd_q: [
      ['out', V, false, X],
      ['dout', V, false, X],
      ['dq', V, true, X],
      stats(true, '(lse, sum, delta = dO_i . O_i, live = 1 if dO_i != 0 else 0): delta and live written'),
    ],
    bwd_kv: [
      ['dout', V, false, X],
      stats(false, '(lse, sum, delta, live)'),
      ['dk', V, true, X],
      ['dv', V, true, X],
    ],
  };
  return [['q', V, false, X], ['k', V, false, X], ['v', V, false, X], ...aux, ...outputs[pass]];
}

function bindings(mode: AttentionMode, pass: AttentionPass, V: string, storeZ: boolean): string {
  return bindingList(mode, pass, V, storeZ)
    .map(([name, ty, rw, shape], i) => `@group(0) @binding(${i + 1}) var<storage, ${rw ? 'read_write' : 'read'}> ${name}: array<${ty}>; // ${shape}`)
    .join('\n');
}

// The passes are written out over the R rows of a thread (`{u}` below) and, when NV <= UNROLL_D, over the NV
// vector slots of a row (`{d}`), so private arrays are indexed by constants and live in registers (Mesa lowers
// dynamically indexed private arrays to slow code). Wider rows (AttRec's D = 150) loop over d instead: unrolled
// they took minutes to compile on llvmpipe.
const UNROLL_D = 8;

/**
 * The stored score of (row, column c = key - first key) (storeScores): stats element zs_base + (row * lz + c) / 4,
 * component c % 4 (lz a multiple of 4: an element holds keys of one row, i.e. of one thread).
 */
const ZS = (row: string, c: string): string => `stats[p.zs_base + (${row} * p.lz + ${c}) / 4u][(${c}) & 3u]`;

/** The WGSL text helpers of one (V, NV, R) shape: rows(`...{u}...`), slots(`...{d}...`), dot products. */
function writer(V: string, NV: number, R: number) {
  const slots = (text: string): string => forSlots(NV, text, { key: 'd', limit: UNROLL_D });
  const vdot = (a: string, b: string): string => (V === 'f32' ? `${a} * ${b}` : `dot(${a}, ${b})`);
  return {
    /** `text` once per row u of the thread. */
    rows: (text: string): string => unroll(R, text, 'u'),
    /** `text` (a condition on row u) or-ed over the rows. */
    anyRow: (text: string): string => unroll(R, text, 'u', ' || '),
    /** Statements over the slots d of a row. */
    slots,
    /** `name` = sum over the slots d of a(d) . b(d). */
    dot: (name: string, a: string, b: string): string =>
      NV <= UNROLL_D
        ? `let ${name} = ${forSlots(NV, vdot(a, b), { key: 'd', limit: UNROLL_D, sep: ' + ' })};`
        : `var ${name} = 0.0; ${slots(`${name} += ${vdot(a, b)};`)}`,
    /** `text` for each row u that the thread owns (g.n may be < R at the end of a group). */
    store: (text: string): string => unroll(R, `  if ({u}u < g.n) {\n${text}\n  }`, 'u'),
  };
}

/** The thread's rows: group geometry, first visible key, and its R row indices x{u}. */
const HEAD = (R: number): string => /* wgsl */ `
${main1d(WG)} {
  let r = ${foldedIndex(WG)};
  if (r >= p.threads) { return; }
  let g = geo(r);
  let fv = first_valid(g);
${unroll(R, '  let x{u} = g.x0 + min({u}u, g.n - 1u);', 'u')}`;

/**
 * fwd: online softmax over the keys j (running max m, sum l; the accumulators rescaled when m grows); weights
 * that are exactly 0 skip the V accumulation; out = a / l, lse = m + log(l) (or, before the last key chunk, the
 * unnormalised state in out, stats = (m, l)).
 */
function fwdWgsl(mode: AttentionMode, V: string, NV: number, R: number, storeZ: boolean): string {
  const { rows, anyRow, slots, dot, store } = writer(V, NV, R);
  const varlenCausal = mode === 'varlen' ? 'p.causal != 0u' : 'false';
  return /* wgsl */ `${HEAD(R)}
${rows(`  let vis{u} = any_visible(x{u}, fv);
  let ra{u} = g.base + x{u} * g.stride;
  var q{u}: array<${V}, ${NV}>;
  var a{u}: array<${V}, ${NV}>;
  ${slots('q{u}[{d}] = q[ra{u} + {d}];')}
  var m{u} = -3.0e38;
  var l{u} = 0.0;`)}
  let last = p.j1 >= p.L;
  if (p.j0 != 0u) {
${rows(`    let st{u} = stats[g.lb + x{u}]; m{u} = st{u}.x; l{u} = st{u}.y; ${slots('a{u}[{d}] = out[ra{u} + {d}];')}`)}
  }
  var kr: array<${V}, ${NV}>;
  var vr: array<${V}, ${NV}>;
  let jend = min(select(g.hi, min(g.hi, g.x0 + g.n), ${varlenCausal}), g.lo + p.j1);
  for (var j = g.lo + p.j0; j < jend; j++) {
    let ka = g.base + j * g.stride;
    ${slots('kr[{d}] = k[ka + {d}];')}
    let kpad = key_pad(g, j);
${rows(`    ${dot('z{u}s', 'q{u}[{d}]', 'kr[{d}]')}
    let z{u} = masked_score(z{u}s, vis{u}, kpad, x{u}, j);${storeZ ? `\n    ${ZS('(g.lb + x{u})', 'j - g.lo')} = z{u};` : ''}
    var w{u} = 0.0;
    if (!(${varlenCausal} && j > x{u})) {
      if (z{u} > m{u}) {
        let c = exp(m{u} - z{u});
        l{u} *= c;
        ${slots('a{u}[{d}] *= c;')}
        m{u} = z{u};
      }
      let e = exp(z{u} - m{u});
      l{u} += e;
      w{u} = e * mult(g, x{u}, j);
    }`)}
    if (${anyRow('w{u} != 0.0')}) {
      ${slots('vr[{d}] = v[ka + {d}];')}
${rows(`      ${slots('a{u}[{d}] += w{u} * vr[{d}];')}`)}
    }
  }
${store(`    if (!last) {
      ${slots('out[ra{u} + {d}] = a{u}[{d}];')}
      stats[g.lb + x{u}] = vec4<f32>(m{u}, l{u}, 0.0, 0.0);
    } else {
    let inv = 1.0 / l{u};
    ${slots('out[ra{u} + {d}] = a{u}[{d}] * inv;')}
    stats[g.lb + x{u}] = vec4<f32>(m{u} + log(l{u}), l{u}, 0.0, 0.0);
    }`)}
}`;
}

/**
 * bwd_q: P_ij = exp(z_ij - lse_i) recomputed, delta_i = dO_i . O_i, dS_ij = P_ij (M_ij dA_ij - delta_i) with
 * dA_ij = dO_i . v_j, dq_i = scale sum_j dS_ij k_j; writes (delta_i, dO_i != 0). Threads with no live row skip.
 */
function bwdQWgsl(mode: AttentionMode, V: string, NV: number, R: number, storeZ: boolean): string {
  const { rows, anyRow, slots, dot, store } = writer(V, NV, R);
  const varlenCausal = mode === 'varlen' ? 'p.causal != 0u' : 'false';
  const score = storeZ
    ? `let z{u} = ${ZS('(g.lb + x{u})', 'j - g.lo')};`
    : `${dot('z{u}s', 'q{u}[{d}]', 'kr[{d}]')}
    let z{u} = masked_score(z{u}s, vis{u}, kpad, x{u}, j);`;
  return /* wgsl */ `${HEAD(R)}
${rows(`  let vis{u} = any_visible(x{u}, fv);
  let ra{u} = g.base + x{u} * g.stride;
  var q{u}: array<${V}, ${NV}>;
  var o{u}: array<${V}, ${NV}>;
  var dq{u}: array<${V}, ${NV}>;
  var live{u} = false;
  ${slots(`q{u}[{d}] = q[ra{u} + {d}]; o{u}[{d}] = dout[ra{u} + {d}]; live{u} = live{u} || any(o{u}[{d}] != ${V}(0.0));`)}
  ${dot('dl{u}', 'o{u}[{d}]', 'out[ra{u} + {d}]')}
  let st{u} = stats[g.lb + x{u}];
  let li{u} = st{u}.x;`)}
  let last = p.j1 >= p.L;
  if (p.j0 != 0u) {
${rows(`    ${slots('dq{u}[{d}] = dq[ra{u} + {d}];')}`)}
  }
  var kr: array<${V}, ${NV}>;
  var vr: array<${V}, ${NV}>;
  // Rows with dO_i == 0 (pad positions of a real loss) have dS_i. == 0: a thread with no live row skips.
  let jend = min(select(select(g.hi, min(g.hi, g.x0 + g.n), ${varlenCausal}), g.lo, !(${anyRow('live{u}')})), g.lo + p.j1);
  for (var j = g.lo + p.j0; j < jend; j++) {
    let ka = g.base + j * g.stride;
    ${slots('kr[{d}] = k[ka + {d}];')}
    let kpad = key_pad(g, j);
${rows(`    ${score}
    let p{u} = select(exp(z{u} - li{u}), 0.0, ${varlenCausal} && j > x{u});`)}
    if (${anyRow('p{u} != 0.0')}) {
      ${slots('vr[{d}] = v[ka + {d}];')}
${rows(`      ${dot('da{u}', 'o{u}[{d}]', 'vr[{d}]')}
      let ds{u} = p{u} * (mult(g, x{u}, j) * da{u} - dl{u});
      ${slots('dq{u}[{d}] += ds{u} * kr[{d}];')}`)}
    }
  }
${store(`    let sc{u} = select(1.0, p.scale, last);
    ${slots('dq[ra{u} + {d}] = dq{u}[{d}] * sc{u};')}
    stats[g.lb + x{u}] = vec4<f32>(st{u}.xy, dl{u}, select(0.0, 1.0, live{u}));`)}
}`;
}

/** bwd_kv: dv_j = sum_i A_ij dO_i, dk_j = scale sum_i dS_ij q_i (the same recomputation, a loop over query rows i). */
function bwdKvWgsl(mode: AttentionMode, V: string, NV: number, R: number, storeZ: boolean): string {
  const { rows, anyRow, slots, dot, store } = writer(V, NV, R);
  const varlenCausal = mode === 'varlen' ? 'p.causal != 0u' : 'false';
  const score = storeZ
    ? `let z{u} = ${ZS('(g.lb + i)', 'x{u} - g.lo')};`
    : `${dot('z{u}s', 'qr[{d}]', 'k{u}[{d}]')}
    let z{u} = masked_score(z{u}s, vis, kpad{u}, i, x{u});`;
  return /* wgsl */ `${HEAD(R)}
${rows(`  let ra{u} = g.base + x{u} * g.stride;
  let kpad{u} = key_pad(g, x{u});
  var k{u}: array<${V}, ${NV}>;
  var v{u}: array<${V}, ${NV}>;
  var dk{u}: array<${V}, ${NV}>;
  var dv{u}: array<${V}, ${NV}>;
  ${slots('k{u}[{d}] = k[ra{u} + {d}]; v{u}[{d}] = v[ra{u} + {d}];')}`)}
  let last = p.j1 >= p.L;
  if (p.j0 != 0u) {
${rows(`    ${slots('dk{u}[{d}] = dk[ra{u} + {d}]; dv{u}[{d}] = dv[ra{u} + {d}];')}`)}
  }
  var qr: array<${V}, ${NV}>;
  var orow: array<${V}, ${NV}>;
  let ibeg = max(select(g.lo, g.x0, ${varlenCausal}), g.lo + p.j0);
  let iend = min(g.hi, g.lo + p.j1);
  for (var i = ibeg; i < iend; i++) {
    if (stats[g.lb + i].w == 0.0) { continue; } // live_i: dO_i == 0, row i contributes nothing
    let qa = g.base + i * g.stride;
    ${slots('qr[{d}] = q[qa + {d}];')}
    let st = stats[g.lb + i];                    // (lse_i, l_i, delta_i, live_i)
    let li = st.x;
    let vis = any_visible(i, fv);
${rows(`    ${score}
    let p{u} = select(exp(z{u} - li), 0.0, ${varlenCausal} && x{u} > i);`)}
    if (${anyRow('p{u} != 0.0')}) {
      ${slots('orow[{d}] = dout[qa + {d}];')}
${rows(`      let mm{u} = mult(g, i, x{u});
      ${dot('da{u}', 'orow[{d}]', 'v{u}[{d}]')}
      let ds{u} = p{u} * (mm{u} * da{u} - st.z);
      let w{u} = p{u} * mm{u};
      ${slots('dv{u}[{d}] += w{u} * orow[{d}]; dk{u}[{d}] += ds{u} * qr[{d}];')}`)}
    }
  }
${store(`    let sc{u} = select(1.0, p.scale, last);
    ${slots('dk[ra{u} + {d}] = dk{u}[{d}] * sc{u}; dv[ra{u} + {d}] = dv{u}[{d}];')}`)}
}`;
}

const PASS_WGSL = { fwd: fwdWgsl, bwd_q: bwdQWgsl, bwd_kv: bwdKvWgsl };

/** One kernel per (pass, mode, D, R, storeZ): `attention_masked_fwd{D=32,R=4}`, `attention_masked_bwd_q{D=64,R=4,varlen}`. */
const attnKernels = Object.fromEntries(
  (['fwd', 'bwd_q', 'bwd_kv'] as const).map((pass) => [
    pass,
    kernelFamily(`attention_masked_${pass}`, ({ varlen, D, R, scores }: { varlen: boolean; D: number; R: number; scores: boolean }) => {
      const mode: AttentionMode = varlen ? 'varlen' : 'padded';
      const { V, NV } = vecOf(D);
      return {
        foldable: true,
        wgsl: [
          `// attention_masked_${pass} (${mode}${scores ? ', stored scores' : ''}): see kernels/attention_masked.ts (one thread per ${R} ${pass === 'bwd_kv' ? 'key' : 'query'} rows of one (sequence, head); D = ${D} baked in).`,
          PARAMS,
          bindings(mode, pass, V, scores),
          geometry(mode, NV, R),
          MULT,
          PASS_WGSL[pass](mode, V, NV, R, scores),
        ].join('\n'),
        grid: ({ threads }) => [ceilDiv(threads!, WG)],
        loopTrips: (prm) => attentionTrips(mode, pass, NV, R, prm),
      };
    }),
  ]),
) as Record<AttentionPass, (p: { varlen: boolean; D: number; R: number; scores: boolean }) => Kernel>;

function attnKernel(mode: AttentionMode, pass: AttentionPass, D: number, R: number, storeZ = false): Kernel {
  return attnKernels[pass]({ varlen: mode === 'varlen', D, R, scores: storeZ });
}

/**
 * Loop cost of one attention thread (llvmpipe's loop budget): first_valid (padded with ids: up to L keys), the
 * loops over the other side's rows [j0, j1) and, for D > 32 (NV > UNROLL_D), the loops over d inside them.
 */
function attentionTrips(mode: AttentionMode, pass: AttentionPass, NV: number, R: number, prm: Record<string, number>): number {
  const { fixed, perRow } = attentionCosts(mode, pass, NV, R, prm.L!, prm.has_ids!);
  return fixed + loopCost(prm.j1! - prm.j0!, perRow);
}

function attentionCosts(mode: AttentionMode, pass: AttentionPass, NV: number, R: number, L: number, hasIds: number): { fixed: number; perRow: number } {
  const dc = NV <= UNROLL_D ? 0 : loopCost(NV); // one loop over the row's NV slots (unrolled: none)
  const fv = mode === 'padded' && hasIds ? loopCost(L) : 0;
  if (pass === 'fwd') return { fixed: fv + 3 * R * dc, perRow: dc + R * 3 * dc + dc }; // q / state / out; k, score + rescale + accumulate, v
  if (pass === 'bwd_q') return { fixed: fv + 4 * R * dc, perRow: dc + R * dc + dc + R * 2 * dc }; // q, dO, delta, state / dq; k, score, v, dA + dq
  return { fixed: fv + 3 * R * dc, perRow: dc + R * dc + dc + R * 2 * dc }; // k, v, state / dk dv; q, score, dO, dA + dk dv
}

/** The most rows of the other side one dispatch may loop over (Infinity when the budget allows all). */
function rowsPerDispatch(g: Geom, pass: AttentionPass, hasIds: boolean): number {
  const budget = loopBudget();
  if (!Number.isFinite(budget)) return Infinity;
  const { NV } = vecOf(g.D);
  const { fixed, perRow } = attentionCosts(g.mode, pass, NV, g.R, g.L, hasIds ? 1 : 0);
  return Math.max(1, maxLoopIterations(budget, perRow, fixed));
}

/** The kernels' WGSL, for review and for the reflection test. */
export function attentionWgsl(mode: AttentionMode, pass: AttentionPass, D: number, R = attentionRowsPerThread(D)): string {
  return attnKernel(mode, pass, D, R).spec.wgsl;
}

// ------------------------------------------------------------------ launchers
interface Geom {
  mode: AttentionMode;
  /** Threads: groups * tpg. */
  threads: number;
  /** Threads per group (padded: ceil(L / R)); varlen: row blocks per head. */
  tpg: number;
  /** Rows per thread. */
  R: number;
  L: number;
  H: number;
  T: number;
  D: number;
  /** Shape of q/k/v/out. */
  shape: readonly number[];
  /** Rows n of the statistics (B*H*L | H*T). */
  rows: number;
  /** varlen: starts of seq_of and blocks in the index vidx (padded: 0). */
  seqBase: number;
  blkBase: number;
}

/** Scores per row in stats (storeScores): L rounded up to a multiple of 4, so a vec4 never spans two rows. */
const scoreStride = (L: number): number => Math.ceil(L / 4) * 4;

function params(g: Geom, a: Resolved, hasIds: boolean): Record<string, number> {
  return {
    j0: 0,
    j1: g.L,
    threads: g.threads,
    L: g.L,
    H: g.H,
    T: g.T,
    tpg: g.tpg,
    causal: a.causal ? 1 : 0,
    has_ids: hasIds ? 1 : 0,
    zero_diag: a.zeroDiagonal ? 1 : 0,
    dropout: a.p > 0 ? 1 : 0,
    scale: a.scale,
    fill: a.fill,
    p: a.p,
    keep: a.p < 1 ? 1 / (1 - a.p) : 0,
    rng_base: pcgHash((a.seed + pcgHash(a.offset)) >>> 0),
    zs_base: g.rows,
    lz: scoreStride(g.L),
    seq_base: g.seqBase,
    blk_base: g.blkBase,
  };
}

/** u32 view of an i32/u32 id tensor (the kernel only tests `!= 0`), or a 1-element dummy. */
function idsU32(ids: Tensor | null): Tensor {
  if (!ids) return Tensor.from(new Uint32Array(1), [1], 'u32'); // [1] dummy
  if (ids.dtype === 'u32') return ids.detach();
  if (ids.dtype === 'i32') return new Tensor(ids._storage.retain(), ids.shape, 'u32'); // [B, L]
  throw new Error(`attention_masked: ids must be u32 or i32, got ${ids.describe()}`);
}

type Aux = Record<string, Tensor>;

/**
 * The statistics buffer of a forward (see the header): [n] (lse, sum, delta, live), plus the scores (storeScores),
 * as a flat f32 tensor.
 */
function statsTensor(g: Geom, storeZ: boolean): Tensor {
  const elems = g.rows + (storeZ ? (g.rows * scoreStride(g.L)) / 4 : 0);
  return Tensor.empty([4 * elems]); // [elems * 4] f32 = [elems] vec4<f32>
}

function runFwd(g: Geom, a: Resolved, q: Tensor, k: Tensor, v: Tensor, aux: Aux, hasIds: boolean, storeZ: boolean): { out: Tensor; stats: Tensor } {
  const out = Tensor.empty(g.shape); // [B, H, L, D] | [T, H, D]
  const stats = statsTensor(g, storeZ);
  if (g.threads > 0) {
    // Keys [j0, j1) per dispatch: one dispatch unless a thread's key loop would pass the loop budget (D > 32
    // loops over d per key); then the online-softmax state waits in out (unnormalised) and stats (max, sum).
    const kern = attnKernel(g.mode, 'fwd', g.D, g.R, storeZ);
    for (const [j0, j1] of ranges(g.L, rowsPerDispatch(g, 'fwd', hasIds))) kern.run({ q, k, v, ...aux, out, stats }, { ...params(g, a, hasIds), j0, j1 });
  }
  return { out, stats };
}

function runBwd(
  g: Geom,
  a: Resolved,
  saved: { q: Tensor; k: Tensor; v: Tensor; out: Tensor; stats: Tensor; storeZ: boolean },
  dout: Tensor,
  aux: Aux,
  hasIds: boolean,
  need: readonly boolean[],
): [Tensor | null, Tensor | null, Tensor | null] {
  const { q, k, v, out, stats, storeZ: sz } = saved;
  const pr = params(g, a, hasIds);
  const dq = Tensor.empty(g.shape); // [B, H, L, D] | [T, H, D]
  // dq's kernel also writes (delta, live) into stats (beside lse), which dk/dv need: it always runs.
  if (g.threads > 0) {
    for (const [j0, j1] of ranges(g.L, rowsPerDispatch(g, 'bwd_q', hasIds))) {
      attnKernel(g.mode, 'bwd_q', g.D, g.R, sz).run({ q, k, v, ...aux, out, dout, dq, stats }, { ...pr, j0, j1 });
    }
  }
  let dk: Tensor | null = null;
  let dv: Tensor | null = null;
  if (need[1] || need[2]) {
    dk = Tensor.empty(g.shape); // [B, H, L, D] | [T, H, D]
    dv = Tensor.empty(g.shape); // [B, H, L, D] | [T, H, D]
    if (g.threads > 0) {
      for (const [j0, j1] of ranges(g.L, rowsPerDispatch(g, 'bwd_kv', hasIds))) {
        attnKernel(g.mode, 'bwd_kv', g.D, g.R, sz).run({ q, k, v, ...aux, dout, stats, dk, dv }, { ...pr, j0, j1 });
      }
    }
  }
  let dqOut: Tensor | null = dq;
  if (!need[0]) {
    dq.dispose();
    dqOut = null;
  }
  if (!need[1]) dk?.dispose();
  if (!need[2]) dv?.dispose();
  return [dqOut, need[1] ? dk : null, need[2] ? dv : null];
}

function checkQkv(name: string, q: Tensor, k: Tensor, v: Tensor, rank: number): void {
  for (const [n, t] of [['q', q], ['k', k], ['v', v]] as const) {
    if (t.dtype !== 'f32') throw new Error(`${name}: ${n} must be f32, got ${t.describe()}`);
    if (t.ndim !== rank) throw new Error(`${name}: ${n} must have rank ${rank}, got ${t.describe()}`);
    if (t.shape.some((d, i) => d !== q.shape[i])) throw new Error(`${name}: q, k, v shapes differ: ${q.describe()}, ${k.describe()}, ${v.describe()}`);
  }
}

// ------------------------------------------------------------------ padded op
interface PaddedAttrs {
  opts: AttentionOptions;
}

const attentionMaskedOp = defineOp<PaddedAttrs>({
  name: 'attention_masked',
  forward(ctx, inputs, { opts }) {
    const [q, k, v] = inputs as [Tensor, Tensor, Tensor];
    const ids = inputs[3] ?? null;
    checkQkv('attention_masked', q, k, v, 4);
    const [B, H, L, D] = q.shape as [number, number, number, number];
    if (ids && (ids.ndim !== 2 || ids.shape[0] !== B || ids.shape[1] !== L)) {
      throw new Error(`attention_masked: ids must be [B, L] = [${B}, ${L}], got ${ids.describe()}`);
    }
    const a = resolve(D, opts);
    const R = opts.rowsPerThread ?? attentionRowsPerThread(D);
    const tpg = ceilDiv(L, R);
    const g: Geom = { mode: 'padded', threads: B * H * tpg, tpg, R, L, H, T: 0, D, shape: q.shape, rows: B * H * L, seqBase: 0, blkBase: 0 };
    const idsT = idsU32(ids); // [B, L] u32 view or [1]
    const storeZ = ctx.recording && (opts.storeScores ?? false);
    const { out, stats } = runFwd(g, a, q, k, v, { ids: idsT }, ids !== null, storeZ);
    ctx.extra.g = g;
    ctx.extra.a = a;
    ctx.extra.hasIds = ids !== null;
    ctx.extra.storeZ = storeZ;
    ctx.save(q, k, v, out, stats, idsT);
    stats.dispose();
    idsT.dispose();
    return out;
  },
  backward(ctx, gy) {
    const [q, k, v, out, stats, ids] = ctx.saved as [Tensor, Tensor, Tensor, Tensor, Tensor, Tensor];
    const g = ctx.extra.g as Geom;
    const saved = { q, k, v, out, stats, storeZ: ctx.extra.storeZ as boolean };
    const [dq, dk, dv] = runBwd(g, ctx.extra.a as Resolved, saved, gy, { ids }, ctx.extra.hasIds as boolean, ctx.needsGrad);
    return ctx.needsGrad.length === 4 ? [dq, dk, dv, null] : [dq, dk, dv];
  },
});

/**
 * Fused masked multi-head attention. q, k, v [B, H, L, D] -> [B, H, L, D]; ids [B, L] (u32/i32, 0 = padding)
 * or null (no padding mask). Gradients to q, k, v (q and k may be the same tensor: AttRec).
 */
export function attentionMasked(q: Tensor, k: Tensor, v: Tensor, ids: Tensor | null, opts: AttentionOptions = {}): Tensor {
  return attentionMaskedOp.apply(ids ? [q, k, v, ids] : [q, k, v], { opts });
}

// ------------------------------------------------------------------ varlen op
/** Packed-sequence description (see kernels/varlen.ts `packBatch`). */
export interface VarlenLayout {
  /** Slots of the padded layout (each sequence length <= L); the dropout index uses it. */
  L: number;
  /** [B + 1] token offsets of each sequence (T = the last). The GPU index is built from them. */
  hostOffsets: Int32Array;
  /**
   * Derived GPU tensors, owned and disposed with the layout: per rows-per-thread R, the attention index
   * `vidx_r{R}` = [offsets (B+1) | seq_of (T) | blocks (NB)] i32, one upload.
   */
  cache: Map<string, Tensor>;
}

/** The varlen index of a layout for R rows per thread (built and uploaded once, cached on the layout). */
interface VarlenIndex {
  /** [B + 1 + T + NB] i32 (at least 1 element): offsets | seq_of (sequence of each token) | blocks (first token of each R-row block). */
  vidx: Tensor;
  /** Row blocks NB. */
  nb: number;
  /** Starts of seq_of and blocks in vidx. */
  seqBase: number;
  blkBase: number;
}

function varlenIndex(layout: VarlenLayout, R: number): VarlenIndex {
  const o = layout.hostOffsets;
  const B = o.length - 1;
  const T = o[B]!;
  const starts: number[] = [];
  for (let b = 0; b < B; b++) for (let t = o[b]!; t < o[b + 1]!; t += R) starts.push(t);
  const seqBase = B + 1;
  const blkBase = seqBase + T;
  const key = `vidx_r${R}`;
  let vidx = layout.cache.get(key);
  if (!vidx || vidx.disposed) {
    const host = new Int32Array(Math.max(1, blkBase + starts.length));
    host.set(o, 0);
    for (let b = 0; b < B; b++) host.fill(b, seqBase + o[b]!, seqBase + o[b + 1]!);
    host.set(starts, blkBase);
    vidx = Tensor.from(host, [host.length], 'i32'); // [B + 1 + T + NB]
    layout.cache.set(key, vidx);
  }
  return { vidx, nb: starts.length, seqBase, blkBase };
}

const attentionVarlenOp = defineOp<{ layout: VarlenLayout; opts: AttentionOptions }>({
  name: 'attention_varlen',
  forward(ctx, inputs, { layout, opts }) {
    const [q, k, v] = inputs as [Tensor, Tensor, Tensor];
    checkQkv('attention_varlen', q, k, v, 3);
    const [T, H, D] = q.shape as [number, number, number];
    const o = layout.hostOffsets;
    if (o.length < 1 || o[0] !== 0 || o[o.length - 1] !== T) throw new Error(`attention_varlen: offsets run from ${o[0]} to ${o.at(-1)}, T = ${T}`);
    for (let b = 0; b + 1 < o.length; b++) {
      if (!(o[b + 1]! >= o[b]! && o[b + 1]! - o[b]! <= layout.L)) throw new Error(`attention_varlen: offsets [${o[b]}, ${o[b + 1]}) of sequence ${b} are not a run of at most L = ${layout.L} tokens`);
    }
    const a = resolve(D, opts);
    const R = opts.rowsPerThread ?? attentionRowsPerThread(D);
    const { vidx, nb, seqBase, blkBase } = varlenIndex(layout, R);
    const g: Geom = { mode: 'varlen', threads: H * nb, tpg: nb, R, L: layout.L, H, T, D, shape: q.shape, rows: H * T, seqBase, blkBase };
    const storeZ = ctx.recording && (opts.storeScores ?? false);
    const { out, stats } = runFwd(g, a, q, k, v, { vidx }, false, storeZ);
    ctx.extra.g = g;
    ctx.extra.a = a;
    ctx.extra.storeZ = storeZ;
    ctx.save(q, k, v, out, stats, vidx); // vidx saved: the backward does not depend on the layout's lifetime
    stats.dispose();
    return out;
  },
  backward(ctx, gy) {
    const [q, k, v, out, stats, vidx] = ctx.saved as [Tensor, Tensor, Tensor, Tensor, Tensor, Tensor];
    const g = ctx.extra.g as Geom;
    const saved = { q, k, v, out, stats, storeZ: ctx.extra.storeZ as boolean };
    return runBwd(g, ctx.extra.a as Resolved, saved, gy, { vidx }, false, ctx.needsGrad);
  },
});

/**
 * Padding-free attention over packed tokens: q, k, v [T, H, D] -> [T, H, D], sequences described by `layout`
 * (from kernels/varlen.ts `packBatch`). Causal masking is by packed index within each sequence.
 */
export function attentionVarlen(q: Tensor, k: Tensor, v: Tensor, layout: VarlenLayout, opts: AttentionOptions = {}): Tensor {
  return attentionVarlenOp.apply([q, k, v], { layout, opts });
}

// ------------------------------------------------------------------ float64 references
export interface RefAttentionOptions {
  causal?: boolean;
  fill?: number;
  dropout?: number;
  seed?: number;
  offset?: number;
  zeroDiagonal?: boolean;
  scale?: number;
}

/** Multiplier M[i, j] for the reference: same RNG index as the kernel ((b*H + h)*L + i)*L + j. */
function refMult(o: RefAttentionOptions, idx: number, i: number, j: number): number {
  let m = 1;
  const p = o.dropout ?? 0;
  // p compared in f32, as the kernel's uniform holds it
  if (p > 0) m = rngUniform(o.seed ?? 0, o.offset ?? 0, idx) < Math.fround(p) ? 0 : p < 1 ? 1 / (1 - p) : 0;
  if (o.zeroDiagonal && i === j) m = 0;
  return m;
}

interface RefRowsOut {
  P: Float64Array; // [L, L] softmax of one (b, h)
  M: Float64Array; // [L, L]
}

/** P and M of group (b, h): the literal official formula z = s*scale + fill*masked, in float64. */
function refGroup(q: F64, k: F64, ids: F64 | null, o: RefAttentionOptions, b: number, h: number): RefRowsOut {
  const [, H, L, D] = q.shape as [number, number, number, number];
  const scale = o.scale ?? 1 / Math.sqrt(D);
  const fill = o.fill ?? -10000;
  const base = (b * H + h) * L * D;
  const P = new Float64Array(L * L);
  const M = new Float64Array(L * L);
  for (let i = 0; i < L; i++) {
    let mx = -Infinity;
    for (let j = 0; j < L; j++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += q.data[base + i * D + d]! * k.data[base + j * D + d]!;
      const masked = (o.causal && j > i) || (ids !== null && ids.data[b * L + j] === 0);
      const z = s * scale + (masked ? fill : 0);
      P[i * L + j] = z;
      mx = Math.max(mx, z);
    }
    let sum = 0;
    for (let j = 0; j < L; j++) sum += P[i * L + j] = Math.exp(P[i * L + j]! - mx);
    for (let j = 0; j < L; j++) {
      P[i * L + j]! /= sum;
      M[i * L + j] = refMult(o, ((b * H + h) * L + i) * L + j, i, j);
    }
  }
  return { P, M };
}

/** Reference forward, padded layout: q, k, v [B, H, L, D], ids [B, L] or null. */
export function refAttentionMasked(q: F64, k: F64, v: F64, ids: F64 | null, o: RefAttentionOptions = {}): F64 {
  const [B, H, L, D] = q.shape as [number, number, number, number];
  const out = new Float64Array(B * H * L * D);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const { P, M } = refGroup(q, k, ids, o, b, h);
      const base = (b * H + h) * L * D;
      for (let i = 0; i < L; i++) {
        for (let j = 0; j < L; j++) {
          const a = P[i * L + j]! * M[i * L + j]!;
          if (a === 0) continue;
          for (let d = 0; d < D; d++) out[base + i * D + d]! += a * v.data[base + j * D + d]!;
        }
      }
    }
  }
  return { data: out, shape: [B, H, L, D] };
}

/** Reference backward: [dq, dk, dv] for output gradient gy [B, H, L, D]. */
export function refAttentionMaskedGrad(q: F64, k: F64, v: F64, ids: F64 | null, gy: F64, o: RefAttentionOptions = {}): [F64, F64, F64] {
  const [B, H, L, D] = q.shape as [number, number, number, number];
  const scale = o.scale ?? 1 / Math.sqrt(D);
  const dq = new Float64Array(B * H * L * D);
  const dk = new Float64Array(B * H * L * D);
  const dv = new Float64Array(B * H * L * D);
  const dS = new Float64Array(L * L);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const { P, M } = refGroup(q, k, ids, o, b, h);
      const base = (b * H + h) * L * D;
      for (let i = 0; i < L; i++) {
        // dP_ij = M_ij (dO_i . v_j); dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik)
        let dot = 0;
        for (let j = 0; j < L; j++) {
          let da = 0;
          for (let d = 0; d < D; d++) da += gy.data[base + i * D + d]! * v.data[base + j * D + d]!;
          const dp = M[i * L + j]! * da;
          dS[i * L + j] = dp;
          dot += P[i * L + j]! * dp;
          const a = P[i * L + j]! * M[i * L + j]!;
          for (let d = 0; d < D; d++) dv[base + j * D + d]! += a * gy.data[base + i * D + d]!;
        }
        for (let j = 0; j < L; j++) dS[i * L + j] = P[i * L + j]! * (dS[i * L + j]! - dot);
      }
      for (let i = 0; i < L; i++) {
        for (let j = 0; j < L; j++) {
          const s = dS[i * L + j]! * scale;
          for (let d = 0; d < D; d++) {
            dq[base + i * D + d]! += s * k.data[base + j * D + d]!;
            dk[base + j * D + d]! += s * q.data[base + i * D + d]!;
          }
        }
      }
    }
  }
  const shape = [B, H, L, D];
  return [{ data: dq, shape }, { data: dk, shape: [...shape] }, { data: dv, shape: [...shape] }];
}

/**
 * Reference for the varlen op, through the padded reference: packed [T, H, D] rows are placed in their padded
 * slots (left padding, L slots), the padded reference runs with ids = 1 on real slots and 0 on pads, and the
 * real rows are read back. `lengths[b]` = tokens of sequence b (sum = T). Exact when masked logits underflow.
 */
export function refAttentionVarlen(q: F64, k: F64, v: F64, lengths: readonly number[], L: number, o: RefAttentionOptions = {}): F64 {
  const { toPadded, fromPadded, ids } = refPackMaps(q.shape, lengths, L);
  return fromPadded(refAttentionMasked(toPadded(q), toPadded(k), toPadded(v), ids, o));
}

export function refAttentionVarlenGrad(q: F64, k: F64, v: F64, lengths: readonly number[], L: number, gy: F64, o: RefAttentionOptions = {}): [F64, F64, F64] {
  const { toPadded, fromPadded, ids } = refPackMaps(q.shape, lengths, L);
  const g = refAttentionMaskedGrad(toPadded(q), toPadded(k), toPadded(v), ids, toPadded(gy), o);
  return [fromPadded(g[0]), fromPadded(g[1]), fromPadded(g[2])];
}

function refPackMaps(shape: readonly number[], lengths: readonly number[], L: number) {
  const [T, H, D] = shape as [number, number, number];
  const B = lengths.length;
  const slot: Array<[number, number]> = []; // token -> (b, slot)
  const ids = new Float64Array(B * L);
  for (let b = 0; b < B; b++) {
    const n = lengths[b]!;
    if (n > L) throw new Error(`refAttentionVarlen: sequence ${b} has ${n} > L = ${L} tokens`);
    for (let x = 0; x < n; x++) {
      slot.push([b, L - n + x]);
      ids[b * L + L - n + x] = 1;
    }
  }
  if (slot.length !== T) throw new Error(`refAttentionVarlen: lengths sum to ${slot.length}, T = ${T}`);
  const toPadded = (x: F64): F64 => {
    const out = new Float64Array(B * H * L * D);
    slot.forEach(([b, s], t) => {
      for (let h = 0; h < H; h++) for (let d = 0; d < D; d++) out[((b * H + h) * L + s) * D + d] = x.data[(t * H + h) * D + d]!;
    });
    return { data: out, shape: [B, H, L, D] };
  };
  const fromPadded = (x: F64): F64 => {
    const out = new Float64Array(T * H * D);
    slot.forEach(([b, s], t) => {
      for (let h = 0; h < H; h++) for (let d = 0; d < D; d++) out[(t * H + h) * D + d] = x.data[((b * H + h) * L + s) * D + d]!;
    });
    return { data: out, shape: [T, H, D] };
  };
  return { toPadded, fromPadded, ids: { data: ids, shape: [B, L] } };
}
