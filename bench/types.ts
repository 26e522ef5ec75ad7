// One benchmark case: set up inputs once, validate against the float64 reference, then time run().
// Row names start with the kernel family: `matmul.tiled`, `matmul.tfjs`, `attention.fused`, `attention.composed`.
export interface BenchCase {
  /** `<family>.<variant>`; a fused kernel's name contains `fused`, its composition's `composed`. */
  name: string;
  /** Human-readable shape, e.g. `512x512x512` or `B256 H2 L50 D32`. */
  shape: string;
  /** Work per run() for GFLOP/s and GB/s columns (omit when meaningless). */
  flops?: number;
  bytes?: number;
  setup(): Promise<BenchInstance> | BenchInstance;
}

export interface BenchInstance {
  /** Record one run's GPU work (the runner flushes and waits on the GPU around it). */
  run(): void | Promise<void>;
  /** Throw if the result disagrees with the reference (runs before timing). */
  validate?(): Promise<void>;
  dispose(): void | Promise<void>;
}

/** One row of `npm run bench -- --json`. */
export interface BenchRow {
  name: string;
  shape: string;
  ms: number;
  gflops: number | null;
  gbps: number | null;
  adapter: string;
}
