#!/usr/bin/env bash
# CI browser lane: the package in headless Chromium (WebGPU on SwiftShader), compared with the same tiny training
# run in Node. Installs Debian's chromium only when /usr/bin/chromium is missing, runs `npm run test:browser`
# (test/browser/run.ts) and ends with a plain "browser: N passed, N failed" line; exit status 0 only when all passed.
set -uo pipefail
cd "$(dirname "$0")/.."
export EGL_PLATFORM=surfaceless NODEVICE_SELECT=1
start=$(date +%s)
fail() { echo "browser CI: $1"; echo "browser: 0 passed, 1 failed"; exit 1; }

# 1. Chromium (apt) only when missing.
if [ ! -x /usr/bin/chromium ]; then
  echo "installing: chromium"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium \
    || fail "could not install chromium"
fi
command -v node >/dev/null || fail "node is missing"

# 2. npm dependencies (playwright-core, esbuild, tsx) only when missing (.ci/run installs them with npm ci).
if [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/esbuild ] || [ ! -d node_modules/tsx ]; then
  npm ci --no-audit --no-fund || fail "npm ci failed"
fi

# 3. The browser test; its own last line is the count. If it died before printing one, say so.
log=$(mktemp)
npm run --silent test:browser 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
last=$(grep -E '^browser: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
rm -f "$log"
echo "browser CI time: $(( $(date +%s) - start )) s"
if [ -z "$last" ]; then
  echo "browser: 0 passed, 1 failed"
  exit 1
fi
failed=$(sed -E 's/.* ([0-9]+) failed$/\1/' <<<"$last")
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  echo "browser: ${last#browser: }" | sed -E 's/ 0 failed$/ 1 failed/'
  exit 1
fi
echo "$last"
[ "$status" -eq 0 ]
