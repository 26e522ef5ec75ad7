// models/init.ts — in-place initializers (PyTorch's torch.nn.init names, trailing underscore = in place).
//
// Every random initializer fills the tensor on the GPU with the engine's counter-based RNG (engine/builtins.ts
// rng_fill: element i draws counters 2i, 2i+1, so values do not depend on the launch shape). Without a seed each
// call takes the next offset of the global generator (manualSeed(s) + the same sequence of inits = the same
// model); `{ seed }` pins the stream to (seed, offset ?? 0) instead, so two tensors given the same seed get the
// same numbers. The ref* functions give the float64 values the GPU approximates (it computes Box-Muller in f32).
//   normal_            N(mean, std^2)                                  (S3-Rec init_weights: std 0.02)
//   truncatedNormal_   N(mean, std^2) redrawn beyond 2 std             (TF truncated_normal; AttRec: std 0.001)
//   uniform_           U[lo, hi)
//   xavierUniform_     U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out)) (Glorot; TF xavier_initializer)
//   zeros_, ones_, constant_, fillRow_ (e.g. an embedding's padding row)
import { fillInPlace, markWritten, randomFill, rngU32, rngUniform, rt, type RandOptions, type Tensor } from '../engine/index.js';

export interface InitOptions {
  /** Pin the random stream: (seed, offset ?? 0) instead of the global generator's next offset. */
  seed?: number;
  offset?: number;
}

function rng(o: InitOptions): RandOptions {
  return o.seed === undefined ? {} : { seed: o.seed, offset: o.offset ?? 0 };
}

export function normal_(t: Tensor, std = 1, mean = 0, o: InitOptions = {}): Tensor {
  return randomFill(t, 'normal', mean, std, rng(o));
}

export function truncatedNormal_(t: Tensor, std = 1, mean = 0, o: InitOptions = {}): Tensor {
  return randomFill(t, 'truncatedNormal', mean, std, rng(o));
}

export function uniform_(t: Tensor, lo = 0, hi = 1, o: InitOptions = {}): Tensor {
  return randomFill(t, 'uniform', lo, hi, rng(o));
}

/**
 * Fans as PyTorch computes them: a weight [out, in, ...receptive] has fan_in = in * receptive, fan_out =
 * out * receptive (TF's [in, out] kernel gives the same sum, which is all Glorot uses).
 */
export function fans(shape: readonly number[]): { fanIn: number; fanOut: number } {
  if (shape.length < 2) throw new Error(`fans: a weight needs at least 2 dimensions, got [${shape.join(', ')}]`);
  const receptive = shape.slice(2).reduce((a, b) => a * b, 1);
  return { fanIn: shape[1]! * receptive, fanOut: shape[0]! * receptive };
}

export function xavierUniform_(t: Tensor, o: InitOptions & { gain?: number } = {}): Tensor {
  const { fanIn, fanOut } = fans(t.shape);
  const b = (o.gain ?? 1) * Math.sqrt(6 / (fanIn + fanOut));
  return uniform_(t, -b, b, o);
}

export function constant_(t: Tensor, value: number): Tensor {
  fillInPlace(t, value);
  return t;
}

export const zeros_ = (t: Tensor): Tensor => constant_(t, 0);
export const ones_ = (t: Tensor): Tensor => constant_(t, 1);

/** Set row `row` of a [R, ...] tensor to `value` (recorded work before it runs first). */
export function fillRow_(t: Tensor, row: number, value = 0): Tensor {
  const R = t.shape[0] ?? 0;
  if (!Number.isInteger(row) || row < 0 || row >= R) throw new Error(`fillRow_: row ${row} of ${t.describe()}`);
  const D = t.size / R;
  if (D === 0) return t;
  const data = t.dtype === 'f32' ? new Float32Array(D).fill(value) : t.dtype === 'i32' ? new Int32Array(D).fill(value) : new Uint32Array(D).fill(value);
  rt().queue.flush();
  rt().device.queue.writeBuffer(t.buffer, row * D * 4, data.buffer, 0, data.byteLength);
  markWritten(t.buffer);
  return t;
}

// ------------------------------------------------------------------------------------------------ float64 references
// What rng_fill computes, in float64, for element i of a fill with (seed, offset).
function normalAt(seed: number, offset: number, c: number): number {
  const u1 = ((rngU32(seed, offset, c >>> 0) >>> 8) + 1) / 16777216; // (0, 1]
  const u2 = rngUniform(seed, offset, (c + 1) >>> 0);
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
}

export function refNormal(n: number, seed: number, offset: number, std = 1, mean = 0): Float64Array {
  return Float64Array.from({ length: n }, (_, i) => mean + std * normalAt(seed, offset, 2 * i));
}

/**
 * Truncated normal: redraw k uses counters 2i + k * 2^31 (at most 16 redraws, then clamp). `ambiguous[i]` marks
 * elements where some draw lies within 1e-4 of the +-2 bound, where f32 and f64 may decide differently.
 */
export function refTruncatedNormal(n: number, seed: number, offset: number, std = 1, mean = 0): { data: Float64Array; ambiguous: Uint8Array } {
  const data = new Float64Array(n);
  const ambiguous = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    let z = normalAt(seed, offset, 2 * i);
    let k = 1;
    for (;;) {
      if (Math.abs(Math.abs(z) - 2) < 1e-4) ambiguous[i] = 1;
      if (Math.abs(z) <= 2 || k > 16) break;
      z = normalAt(seed, offset, (2 * i + k * 2147483648) >>> 0);
      k++;
    }
    data[i] = mean + std * Math.max(-2, Math.min(2, z));
  }
  return { data, ambiguous };
}

export function refUniform(n: number, seed: number, offset: number, lo = 0, hi = 1): Float64Array {
  return Float64Array.from({ length: n }, (_, i) => lo + (hi - lo) * rngUniform(seed, offset, 2 * i));
}
