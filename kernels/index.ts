// The functional API of the op library: `import * as F from 'seqrec-webgpu/kernels'`.
export * from './elementwise.js';
export * from './reduce.js';
export * from './matmul.js';
export * from './shape.js';
export * from './scatter.js';
export * from './embedding.js';
export * from './layernorm.js';
export * from './softmax.js';
export * from './dropout.js';
export * from './attention_masked.js';
export * from './infonce.js';
export * from './pairwise.js';
export * from './euclid_score.js';
export * from './topk.js';
