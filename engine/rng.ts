// Counter-based RNG shared by the GPU kernels and the float64 references: a random u32 is a pure function of
// (seed, offset, index), so the same seed gives the same numbers whatever the launch shape. The hash is PCG's
// output permutation (O'Neill; the "pcg hash" of Jarzynski & Olano 2020), chained three times.
// Each random op takes a fresh `offset` from a global counter (as PyTorch's Philox offsets): manualSeed(s) then
// the same sequence of ops reproduces the same tensors.

/** WGSL `pcg_hash(v)`: the hash alone (kernels that precompute the seed's part on the host: attention). */
export const PCG_HASH_WGSL = /* wgsl */ `
fn pcg_hash(v: u32) -> u32 {
  let s = v * 747796405u + 2891336453u;
  let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
  return (w >> 22u) ^ w;
}`;

/** WGSL snippet for kernels: `rng_u32(seed, offset, i)`, `rng_uniform(seed, offset, i)` in [0, 1) (and pcg_hash). */
export const RNG_WGSL = /* wgsl */ `${PCG_HASH_WGSL}
fn rng_u32(seed: u32, offset: u32, i: u32) -> u32 {
  return pcg_hash(i + pcg_hash(seed + pcg_hash(offset)));
}
fn rng_uniform(seed: u32, offset: u32, i: u32) -> f32 {
  return f32(rng_u32(seed, offset, i) >> 8u) * (1.0 / 16777216.0);
}
`;

export function pcgHash(v: number): number {
  const s = (Math.imul(v >>> 0, 747796405) + 2891336453) >>> 0;
  const w = Math.imul(((s >>> ((s >>> 28) + 4)) ^ s) >>> 0, 277803737) >>> 0;
  return ((w >>> 22) ^ w) >>> 0;
}

export function rngU32(seed: number, offset: number, i: number): number {
  return pcgHash((i + pcgHash((seed + pcgHash(offset)) >>> 0)) >>> 0);
}

/** Same value the GPU's rng_uniform gives (exactly representable in f32). */
export function rngUniform(seed: number, offset: number, i: number): number {
  return (rngU32(seed, offset, i) >>> 8) / 16777216;
}

let globalSeed = 42;
let globalOffset = 0;

/** Reset the global generator: the same seed and the same sequence of random ops give the same numbers. */
export function manualSeed(seed: number): void {
  globalSeed = seed >>> 0;
  globalOffset = 0;
}

/** Reserve the next offset of the global generator; returns {seed, offset}. */
export function nextRng(): { seed: number; offset: number } {
  return { seed: globalSeed, offset: globalOffset++ };
}

/** Current generator state, for checkpoints. */
export function rngState(): { seed: number; offset: number } {
  return { seed: globalSeed, offset: globalOffset };
}

export function setRngState(s: { seed: number; offset: number }): void {
  globalSeed = s.seed >>> 0;
  globalOffset = s.offset;
}
