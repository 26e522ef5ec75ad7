// engine/versions.ts — write versions of GPU buffers (as PyTorch's tensor._version). Every write the engine makes
// to a buffer gives it a new version from one global counter: a pool buffer handed out, Tensor.from / write, a
// kernel's read_write binding (Kernel.run), a queue copy's destination, the library's own direct uploads. A cache
// of data derived from tensors (attrec_step's compute-width copies of the parameters) is valid while its sources
// still have the versions it recorded. Code that writes a tensor's buffer behind the engine's back (its own
// device.queue.writeBuffer) must call markWritten(buffer).
const versions = new WeakMap<GPUBuffer, number>();
let counter = 0;

/** Give a buffer a new write version (every engine write calls this). */
export function markWritten(buf: GPUBuffer): void {
  versions.set(buf, ++counter);
}

/** The buffer's current write version (0: never written through the engine). */
export function writeVersion(buf: GPUBuffer): number {
  return versions.get(buf) ?? 0;
}
