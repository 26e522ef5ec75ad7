// Package entry point: the engine at the top level, the op library as `F`, the models layer as `models`
// (also importable on their own: 'seqrec-webgpu/engine', '/kernels', '/models').
export * from './engine/index.js';
export * as F from './kernels/index.js';
export * as models from './models/index.js';
