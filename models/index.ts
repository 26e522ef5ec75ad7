// Public API of the models layer: modules, initialisers, optimizers, the models (S3-Rec, AttRec) with their
// training and evaluation functions, run folders, and the data layer.
export * from './checkpoint.js';
export * from './nn.js';
export * from './init.js';
export * from './optim.js';
export * from './run.js';
export * from './s3rec.js';
export * from './s3rec_train.js';
export * from './s3rec_pretrain.js';
export * from './attrec.js';
export * from './attrec_train.js';
export * as data from './data/index.js';
