// Shared helpers of the lookup tests (embedding, scatter, attention_masked, varlen, pairwise, bce_neg_sampling): id
// generators, the id-check switch, a bit-exact comparison for the deterministic scatter, and the inputs of the
// two-score losses over table ids.
import { expect } from 'vitest';
import { flags, ref } from '../engine/index.js';
import type { Reduction } from '../kernels/common.js';
import type { InputSpec } from './harness.js';

export function bitsEqual(what: string, got: ArrayLike<number>, want: Float32Array): void {
  const g = new Uint32Array(Float32Array.from(got).buffer);
  const w = new Uint32Array(want.buffer, want.byteOffset, want.length);
  expect(g.length, `${what}: length`).toBe(w.length);
  for (let i = 0; i < w.length; i++) {
    if (g[i] !== w[i]) throw new Error(`${what}: first bit difference at [${i}]: got ${Float32Array.from(got)[i]}, want ${want[i]}`);
  }
}

/** Ids with heavy repeats, padding (0), out-of-range values, and a spread over [0, V). */
export function nastyIds(M: number, V: number, seed: number): Int32Array {
  const rnd = ref.mulberry32(seed);
  return Int32Array.from({ length: M }, () => {
    const r = rnd();
    if (r < 0.3) return 0; // padding-like
    if (r < 0.5) return Math.min(V - 1, 1); // one hot row hit by many positions
    if (r < 0.53) return rnd() < 0.5 ? -1 - Math.floor(rnd() * 5) : V + Math.floor(rnd() * 3); // out of range
    return Math.floor(rnd() * V);
  });
}

/** Run fn with the engine's GPU id range check on or off (restored afterwards). */
export async function withIdChecks(on: boolean, fn: () => Promise<void>): Promise<void> {
  const prev = flags.checkIds;
  flags.checkIds = on;
  try {
    await fn();
  } finally {
    flags.checkIds = prev;
  }
}

/** Left-padded ids [B, L]: sequence b has lens[b] real ids (1..9) in the last slots. */
export function leftPadded(lens: readonly number[], L: number, seed = 1): number[] {
  const rnd = ref.mulberry32(seed);
  const ids: number[] = [];
  for (const n of lens) for (let s = 0; s < L; s++) ids.push(s >= L - n ? 1 + Math.floor(rnd() * 9) : 0);
  return ids;
}

/** Row weights of the masked two-score loss cases: 'some' zeros every third row and halves some, 'all' zeros all. */
export type MaskKind = 'some' | 'all';
export function maskValues(N: number, kind: MaskKind): number[] {
  return Array.from({ length: N }, (_, n) => (kind === 'all' || n % 3 === 1 ? 0 : n % 5 === 2 ? 0.5 : 1));
}

/** A two-score loss case (pairwise, bce_neg_sampling): N rows of width D. */
export interface PairCase {
  N: number;
  D: number;
  mask?: MaskKind;
  range?: readonly [number, number];
  reduction?: Reduction;
}

/** Inputs of a two-score loss over table ids: rows [N, D], table [V, D], positive and negative ids [N] (+ mask [N]). */
export function pairIdInputs(c: PairCase & { V: number; idRange?: readonly [number, number] }): InputSpec[] {
  const { N, D, V } = c;
  const inputs: InputSpec[] = [
    { shape: [N, D], ...(c.range ? { range: c.range } : {}) },
    { shape: [V, D], ...(c.range ? { range: c.range } : {}) },
    { shape: [N], dtype: 'i32', range: c.idRange ?? [0, V - 1] },
    { shape: [N], dtype: 'i32', range: c.idRange ?? [0, V - 1] },
  ];
  if (c.mask) inputs.push({ shape: [N], values: maskValues(N, c.mask), grad: false });
  return inputs;
}
