// Public API of the models layer: modules, initialisers, optimizers, the data layer and the demo model.
export * from './nn.js';
export * from './init.js';
export * from './optim.js';
export * from './meanpool.js';
export * as data from './data/index.js';
