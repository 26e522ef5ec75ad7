// wgsl_reflect 1.6.0's `main` is CommonJS inside a "type":"module" package, so the bare import fails in Node;
// engine/reflect.ts imports the ESM build by path and this shim gives it the package's types.
declare module 'wgsl_reflect/wgsl_reflect.module.js' {
  export * from 'wgsl_reflect';
}
