// Public API of the engine (runtime only; the op library is in kernels/).
export { flags, getenv, packagePath } from './env.js';
export { initGpu, getGpu, hasGpu, destroyGpu, mesaSoftwareAdapter, INSTALL_HINT, type Gpu, type GpuInfo, type InitOptions, type FeatureLevel } from './gpu.js';
export { reflectKernel, type KernelLayout, type StorageBinding, type UniformBinding, type UniformMember, type Scalar } from './reflect.js';
export {
  defineKernel,
  ceilDiv,
  Kernel,
  loopCost,
  maxLoopIterations,
  chunkRanges,
  loopBudget,
  adapterLoopBudget,
  MESA_LOOP_BUDGET,
  definedKernels,
  wgslHasLoop,
  WgslCompileError,
  pipelineKey,
  type WgslMessage,
  type KernelSpec,
  type Bindable,
  type ParamValue,
  type RunOptions,
} from './kernel.js';
export { rt, flush, sync, type Runtime } from './runtime.js';
export { markWritten, writeVersion } from './versions.js';
export { BufferPool, sizeClass, type PoolStats } from './pool.js';
export { Queue, GpuError, DeviceLostError, type FlagSource } from './queue.js';
export { Tensor, Storage, scope, keep, untracked, numel, vec4Count, shapeStr, sameShape, resolveShape, makeTyped, type DType, type Shape, type TypedArray } from './tensor.js';
export { full, zeros, ones, randn, rand, truncatedNormal, randomFill, fillInPlace, clone, copyInto, accumulateInPlace, type RandOptions } from './builtins.js';
export { defineOp, backward, noGrad, isGradEnabled, freeGraph, reshape, BackwardNotSupported, type Op, type OpDef, type OpContext, type GraphNode } from './autograd.js';
export { manualSeed, nextRng, rngState, setRngState, rngU32, rngUniform, pcgHash, RNG_WGSL } from './rng.js';
export { profileKernels, formatProfile, type Profile, type ProfileRow } from './profile.js';
export * as ref from './ref.js';
export * from './safetensors.js';
export { checkIds, checkFinite, finiteReport, IdRangeError, NonFiniteError, type TensorSet } from './checks.js';
