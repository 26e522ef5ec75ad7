// Skips that depend on files outside the repository (../shared) are never silent in CI: with CI=true (set by
// .ci/run) a missing prerequisite fails the suite with the reason; locally the suite is skipped with a printed
// reason. Use `needs(present, reason)` and skip on its result.
export const IN_CI = process.env.CI === 'true' || process.env.CI === '1';

/** True when the prerequisite is there. Missing: throws under CI (the file fails), else warns and returns false. */
export function needs(present: boolean, what: string): boolean {
  if (present) return true;
  if (IN_CI) throw new Error(`CI=true but ${what} is missing: this suite must run in CI, not skip (provide it, or run outside CI)`);
  console.warn(`[seqrec tests] SKIPPED: ${what} is missing (CI=true turns this into a failure)`);
  return false;
}
