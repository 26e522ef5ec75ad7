// Declarative benchmarks. A bench file `bench/<family>.bench.ts` (family = the kernel file name in kernels/)
// exports `entries(size)`: one BenchEntry per op and shape. An entry states the op, its shape, FLOP and byte
// counts, how to make its (seeded, generated) inputs, its float64 reference, and its variants: this repo's kernel
// ('fused'), forced alternatives of it ('alt'), the same math from unfused engine ops ('composed') and the
// tfjs-webgpu peer ('tfjs'). The runner (bench/run.ts) makes the inputs, validates EVERY variant against the
// reference before timing anything, times, and disposes. bench/common.ts has the helpers (engineVariant,
// tfjsVariant, host data) that make a simple entry a few lines: see bench/scale_shift.bench.ts.

/** |got - want| <= atol + rtol·|want| (the test harness's rule). */
export interface Tol {
  atol: number;
  rtol: number;
}

/**
 * fused: this repo's kernel as the op runs it; alt: a forced variant of it (another launch shape, a worst case);
 * composed: the same math from unfused engine ops; tfjs: the peer on the same device; step: an end-to-end
 * training step (bench/e2e.bench.ts); overhead: engine overhead (bench/engine.bench.ts).
 */
export type VariantKind = 'fused' | 'alt' | 'composed' | 'tfjs' | 'step' | 'overhead';
export const VARIANT_KINDS: readonly VariantKind[] = ['fused', 'alt', 'composed', 'tfjs', 'step', 'overhead'];

/** Named outputs read back from a run: compared key by key with the reference. */
export type Outputs = Record<string, ArrayLike<number>>;
/** A reference value: the full array, or a function of the flat index (checked on sampled positions). */
export type RefValue = ArrayLike<number> | ((i: number) => number);
export type Reference = Record<string, RefValue>;

/** Full-size entries (the timed ones) or tiny ones (test/bench_entries.test.ts validates those). */
export type BenchSize = 'full' | 'tiny';

export interface BenchEntry<In = any> {
  /** The family: kernels/<op>.ts and bench/<op>.bench.ts ('engine', 'e2e' for the non-kernel files). */
  op: string;
  /** Row prefix, default `op`; `<op>.<sub>` when a family benches several ops (`pairwise.multilabel`). */
  name?: string;
  /** Human-readable shape, e.g. `512^3` or `B256 H2 L50 D32 ...`: with the name, the row's key. */
  shape: string;
  /** The shape as numbers (positive integers), e.g. { M: 512, N: 512, K: 512 }. */
  dims: Record<string, number>;
  /** Work per run for the GFLOP/s and GB/s columns (omit when meaningless). */
  flops?: number;
  bytes?: number;
  /** Seeded host inputs, made once per phase (validation, timing) and shared by the reference and every variant. */
  inputs(): In | Promise<In>;
  /** The float64 reference on these inputs; `key` is a variant's refKey ('default' otherwise). Memoised per key. */
  reference(inputs: In, key: string): Reference | Promise<Reference>;
  /** Tolerance for every output, or per output name (missing names: DEFAULT_TOL). */
  tol?: Tol | Record<string, Tol>;
  /** Positions checked for a function reference (default 256). */
  sample?: number;
  /** Custom comparison (throws on a mismatch); default: every reference key against the same output with `tol`. */
  check?(what: string, got: Outputs, want: Reference, inputs: In, variant: Variant<In>): void;
  variants: Variant<In>[];
}

export interface Variant<In = any> {
  /** Row = `${entry.name ?? entry.op}.${name}`. */
  name: string;
  kind: VariantKind;
  /** Which reference validation compares with (e.g. 'p0': tfjs's dropout mask comes from its own RNG). */
  refKey?: string;
  /** Overrides the entry's tolerance. */
  tol?: Tol | Record<string, Tol>;
  /** The run does host work besides recording GPU work (a readback + host top-K): always timed by the host clock. */
  hostWork?: boolean;
  setup(inputs: In): Instance | Promise<Instance>;
}

export interface Instance {
  /** One timed run: record the GPU work (the runner flushes and waits around it). */
  run(): void | Promise<void>;
  /** Run once in the validation setting and read the outputs back. */
  outputs(): Promise<Outputs>;
  /** GPU milliseconds of one run measured by the variant itself (tfjs's own timestamp queries). */
  gpuMs?(): Promise<number>;
  dispose(): void | Promise<void>;
}

/** What a bench file exports. */
export interface BenchModule {
  entries(size: BenchSize): BenchEntry[];
}

/** One row of `seqrec bench --json` (and of bench/results/<adapter>.json). */
export interface BenchRow {
  /** The family (bench file / kernel file). */
  op: string;
  /** `<entry name>.<variant>`. */
  name: string;
  variant: string;
  kind: VariantKind;
  shape: string;
  dims: Record<string, number>;
  /** Median ms by `clock`; min ms; timed runs. */
  ms: number;
  minMs: number;
  runs: number;
  clock: 'gpu' | 'host';
  /** Host-clock median (= ms when clock is host). */
  hostMs: number;
  gflops: number | null;
  gbps: number | null;
  /** tfjs median / this median, same group (null: no tfjs row, or this is it). */
  vsTfjs: number | null;
  adapter: string;
  /** ISO date of the run. */
  date: string;
}

/** bench/results/<adapter-slug>.json. */
export interface BenchResults {
  adapter: { slug: string; name: string; backend: string; featureLevel: string; features: string[] };
  /** The clock of the last run that wrote the file, and its settings. */
  clock: 'gpu' | 'host';
  /** The run's settings, and the machine's 1-minute load average when it started and ended (os.loadavg). */
  settings: { reps: number; warmup: number; budget: number; load?: { start: number; end: number } };
  /** Rows, merged by (name, shape): a filtered run replaces its rows and keeps the others. */
  rows: BenchRow[];
}
