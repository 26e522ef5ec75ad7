// kernels/dropout.ts — inverted dropout with a counter-based mask (never stored), forward + backward.
//
//   y[i] = keep_i ? x[i] * scale : 0,   keep_i = rng_uniform(seed, offset, i) >= p,   scale = 1 / (1 - p)
//   x, y: any shape (flat index i). p = 1 gives zeros (PyTorch); p = 0 or training = false is the identity:
//   no kernel, the op returns a view (reshape) so gradients flow and disposing the result leaves x alive.
// The mask is a pure function of (seed, offset, i) (engine/rng.ts: the same hash in WGSL and in TS), so the
// backward recomputes it (gx = keep ? gy * scale : 0) from the seed saved in the op context and the float64
// reference reproduces it exactly (`rngUniform`, compared with p rounded to f32 as the kernel sees it).
// Without an explicit seed, each call reserves the next offset of the global generator (`nextRng()`), so
// manualSeed(s) followed by the same sequence of ops reproduces every mask.
// Parallel strategy: one thread per element, 1-D foldable grid; `dropout{vec4}` (sizes that are a multiple of 4)
// one thread per vec4, the same mask per element (llvmpipe loads and stores per instruction: ~2x faster there).
// Traffic: reads x, writes y (4 B each per element); the hash is ~15 integer ops per element.
import { ceilDiv, defineKernel, defineOp, nextRng, reshape, ref, RNG_WGSL, rngUniform, Tensor, vec4Count } from '../engine/index.js';
import { foldedIndex, main1d } from './common.js';

type F64 = ref.F64;
const WG = 256;

const dropoutKernels = [false, true].map((v) => defineKernel({
  name: v ? 'dropout{vec4}' : 'dropout',
  foldable: true,
  wgsl: /* wgsl */ `
// out[i] = x[i] * scale where rng_uniform(seed, offset, i) >= p, else 0. Forward (x) and backward (x = gy).
// ${v ? 'One vec4 per thread: elements 4t .. 4t + 3 (n counts vec4s).' : 'One element per thread.'}
struct Params { n: u32, seed: u32, offset: u32, p: f32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<${v ? 'vec4<f32>' : 'f32'}>;          // [n]
@group(0) @binding(2) var<storage, read_write> out: array<${v ? 'vec4<f32>' : 'f32'}>;  // [n]
${RNG_WGSL}
${main1d(WG)} {
  let i = ${foldedIndex(WG)};
  if (i >= p.n) { return; }
${v
    ? `  let keep = vec4<bool>(${[0, 1, 2, 3].map((c) => `rng_uniform(p.seed, p.offset, 4u * i + ${c}u) >= p.p`).join(', ')});
  out[i] = select(vec4<f32>(0.0), x[i] * p.scale, keep);`
    : `  let keep = rng_uniform(p.seed, p.offset, i) >= p.p;
  out[i] = select(0.0, x[i] * p.scale, keep);`}
}`,
  grid: ({ n }) => [ceilDiv(n!, WG)],
  minSizes: ({ n }) => ({ x: n!, out: n! }),
}));

export interface DropoutOptions {
  /** Drop probability in [0, 1]. */
  p: number;
  /** false: identity (evaluation). Default true. */
  training?: boolean;
  /** RNG stream; default: the next offset of the global generator. `offset` defaults to 0 with a seed. */
  seed?: number;
  offset?: number;
}

interface Attrs {
  p: number;
  seed: number;
  offset: number;
}

/** Inverted-dropout scale; p = 1 drops everything (scale unused, 0 keeps the uniform finite). */
const scaleOf = (p: number): number => (p >= 1 ? 0 : 1 / (1 - p));

/** Raw launch (no autograd): the forward on x, or the backward on gy with the same stream. */
export function dropoutRaw(x: Tensor, a: Attrs): Tensor {
  if (x.dtype !== 'f32') throw new Error(`dropout: ${x.describe()} is not f32`);
  const out = Tensor.empty(x.shape); // [...x]
  const v = vec4Count(x.size, x, out);
  if (x.size) dropoutKernels[v ? 1 : 0]!.run({ x, out }, { n: v || x.size, seed: a.seed >>> 0, offset: a.offset >>> 0, p: a.p, scale: scaleOf(a.p) });
  return out;
}

const dropoutOp = defineOp<Attrs>({
  name: 'dropout',
  forward(_ctx, [x], a) {
    return dropoutRaw(x!, a); // [...x]
  },
  backward(ctx, gy) {
    return [dropoutRaw(gy, ctx.attrs)]; // [...x], the same mask recomputed from (seed, offset)
  },
});

/** Inverted dropout: zero each element with probability p and scale the rest by 1/(1-p). */
export function dropout(x: Tensor, o: DropoutOptions): Tensor {
  const { p } = o;
  if (!(p >= 0 && p <= 1)) throw new Error(`dropout: p = ${p} must be in [0, 1]`);
  if (o.training === false || p === 0) return reshape(x, x.shape); // identity: a view, no kernel
  const { seed, offset } = o.seed === undefined ? nextRng() : { seed: o.seed, offset: o.offset ?? 0 };
  return dropoutOp.apply([x], { p, seed, offset });
}

// ------------------------------------------------------------------ float64 reference
/** The keep mask the kernel uses (p compared in f32, as the uniform holds it). */
export function refDropoutMask(n: number, p: number, seed: number, offset: number): Uint8Array {
  const pf = Math.fround(p);
  const keep = new Uint8Array(n);
  for (let i = 0; i < n; i++) keep[i] = rngUniform(seed >>> 0, offset >>> 0, i) >= pf ? 1 : 0;
  return keep;
}

/** y = keep ? x / (1 - p) : 0; the gradient is the same map applied to gy. */
export function refDropout(x: F64, p: number, seed: number, offset: number): F64 {
  const keep = refDropoutMask(x.data.length, p, seed, offset);
  const s = scaleOf(p);
  return { data: x.data.map((v, i) => (keep[i] ? v * s : 0)), shape: [...x.shape] };
}
