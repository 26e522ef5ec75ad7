// The functional API of the op library: `import * as F from 'seqrec-webgpu/kernels'`.
export * from './elementwise.js';
export * from './reduce.js';
