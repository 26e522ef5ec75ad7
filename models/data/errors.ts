// DataError: the one error type of the data layer. Every bad input (malformed line, non-integer id, short
// sequence, broken attribute JSON, sample file out of order, missing file) is reported as
// `<file>:<line>: <problem>` (or `<file>: <problem>` when no single line is at fault), so the CLI can print it
// as one line without a stack trace. See docs/DATA.md "Error messages".

export class DataError extends Error {
  override readonly name = 'DataError';
  /** The file at fault, as the caller named it (relative paths stay relative). */
  readonly file: string;
  /** 1-based line number, or undefined when the problem is not on one line (missing file, missing entry). */
  readonly line: number | undefined;
  /** What is wrong, without the file/line prefix. */
  readonly problem: string;

  constructor(file: string, line: number | undefined, problem: string) {
    super(line === undefined ? `${file}: ${problem}` : `${file}:${line}: ${problem}`);
    this.file = file;
    this.line = line;
    this.problem = problem;
  }
}

export function isDataError(e: unknown): e is DataError {
  return e instanceof DataError;
}

const MAX_ID = 2147483647; // ids travel as int32 / u32 on the GPU

/**
 * Parses a decimal token of digits only ("12", "007"); returns -1 for anything else (sign, fraction,
 * exponent, empty, > 2^31-1). Hand-rolled because Number("1e3") / parseInt("12abc") accept too much.
 */
export function parseNonNegInt(s: string): number {
  const n = s.length;
  if (n === 0 || n > 10) return -1;
  let v = 0;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return -1;
    v = v * 10 + c;
  }
  return v > MAX_ID ? -1 : v;
}

/** The problem text for a token that parseNonNegInt rejected. */
export function badIdProblem(what: string, token: string): string {
  const shown = token.length > 40 ? `${token.slice(0, 40)}...` : token;
  if (/^\d+$/.test(token)) return `${what} '${shown}' is too large (ids must be at most ${MAX_ID})`;
  return `${what} '${shown}' is not a non-negative integer`;
}
