import { defineConfig } from 'vitest/config';

// Mesa's EGL needs this in the main process before the first requestAdapter(); worker threads do not
// inherit a changed env, so it is set here and tests run in the `forks` pool (threads segfaulted on llvmpipe).
process.env.EGL_PLATFORM ??= 'surfaceless';
process.env.NODEVICE_SELECT ??= '1';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    // Two cores: two forks at most; each fork owns one GPU device.
    maxWorkers: 2,
    testTimeout: 120_000,
    hookTimeout: 60_000,
    env: { EGL_PLATFORM: 'surfaceless', NODEVICE_SELECT: '1' },
  },
});
