#!/usr/bin/env bash
# SwiftShader lane: the op-harness suites (every kernel against its float64 reference, forward and backward) on a
# second WebGPU implementation: Dawn's Vulkan backend on SwiftShader's Vulkan ICD, a *core* adapter (subgroups,
# timestamp-query, 256 invocations per workgroup, 12 storage buffers per stage), where the main lane runs on
# Mesa llvmpipe through OpenGL ES at compatibility level.
#   bash .ci/swiftshader.sh            (= npm run test:swiftshader)  about 3-4 minutes on 2 shared cores
#   SWIFTSHADER_FULL=1 ...             also the few slowest cases left out below (about 6 minutes)
#   SWIFTSHADER_DOWNLOAD=1 ...         ignore an installed chromium-common, use the downloaded ICD
# Installs only what is missing: libvulkan1 (apt), and the SwiftShader ICD: the one of the installed
# chromium-common package, else chromium-common's .deb downloaded (`apt-get download`, ~30 MB) and extracted with
# dpkg-deb -x into $SWIFTSHADER_CACHE (default /tmp/seqrec-swiftshader; reused by later runs).
# The adapter must be SwiftShader (checked with `seqrec info --json`; no silent fallback to llvmpipe).
# Last line: `swiftshader: N passed, N failed`; exit status 1 on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
export CI=true REQUIRE_GPU=1 EGL_PLATFORM=surfaceless NODEVICE_SELECT=1
results="${SWIFTSHADER_RESULTS:-.vitest-swiftshader.json}"
cache="${SWIFTSHADER_CACHE:-/tmp/seqrec-swiftshader}"
die() {
  echo "swiftshader: $1"
  echo "swiftshader: 0 passed, 1 failed"
  exit 1
}
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

# ---------------------------------------------------------------- 1. the Vulkan loader
if ! dpkg -s libvulkan1 >/dev/null 2>&1; then
  echo "installing: libvulkan1"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends libvulkan1 \
    || die "could not install libvulkan1"
fi

# ---------------------------------------------------------------- 2. the SwiftShader ICD
icd=""
if [ -z "${SWIFTSHADER_DOWNLOAD:-}" ] && dpkg -s chromium-common >/dev/null 2>&1; then
  icd=$(dpkg -L chromium-common | grep '/vk_swiftshader_icd\.json$' | head -n 1)
  [ -n "$icd" ] && echo "SwiftShader ICD: $icd (installed chromium-common)"
fi
if [ -z "$icd" ] || [ ! -f "$icd" ]; then
  icd=$(find "$cache/root" -name vk_swiftshader_icd.json 2>/dev/null | head -n 1)
  if [ -z "$icd" ]; then
    echo "downloading chromium-common (for its SwiftShader ICD) into $cache"
    mkdir -p "$cache/deb"
    rm -f "$cache"/deb/chromium-common_*.deb
    if ! (cd "$cache/deb" && apt-get download chromium-common >/dev/null 2>&1); then
      $SUDO apt-get update -qq || die "apt-get update failed"
      (cd "$cache/deb" && apt-get download chromium-common) || die "apt-get download chromium-common failed"
    fi
    deb=$(ls "$cache"/deb/chromium-common_*.deb 2>/dev/null | head -n 1)
    [ -n "$deb" ] || die "no chromium-common .deb in $cache/deb"
    rm -rf "$cache/root"
    dpkg-deb -x "$deb" "$cache/root" || die "dpkg-deb -x $deb failed"
    icd=$(find "$cache/root" -name vk_swiftshader_icd.json | head -n 1)
  fi
  [ -n "$icd" ] && echo "SwiftShader ICD: $icd (downloaded chromium-common)"
fi
[ -n "$icd" ] && [ -f "$icd" ] || die "no vk_swiftshader_icd.json found"
[ -f "$(dirname "$icd")/libvk_swiftshader.so" ] || die "no libvk_swiftshader.so next to $icd"
export VK_ICD_FILENAMES="$icd" VK_DRIVER_FILES="$icd" SEQREC_BACKEND=vulkan

[ -d node_modules ] || npm ci --no-audit --no-fund || die "npm ci failed"

# ---------------------------------------------------------------- 3. the adapter must be SwiftShader
info=$(node bin/seqrec.js info --json 2>&1) || die "no adapter with VK_ICD_FILENAMES=$icd SEQREC_BACKEND=vulkan: $info"
node -e '
  const i = JSON.parse(process.argv[1]);
  const name = [i.vendor, i.architecture, i.device, i.description].join(" / ");
  console.log(`adapter: ${name} (backend ${i.backend}, ${i.featureLevel}; features: ${i.features.join(", ")})`);
  if (!/swiftshader/i.test(name) || i.backend !== "vulkan" || i.featureLevel !== "core") {
    console.log("not the SwiftShader core adapter");
    process.exit(1);
  }
' "$info" || die "the adapter is not SwiftShader (seqrec info --json: ${info:0:400})"

# ---------------------------------------------------------------- 4. the op-harness suites
# Every test/*.test.ts that checks kernels against their float64 references through test/harness.ts.
files=(
  test/harness.test.ts test/scale_shift.test.ts test/elementwise.test.ts test/reduce.test.ts test/shape.test.ts
  test/scatter.test.ts test/matmul.test.ts test/small_bmm.test.ts test/softmax.test.ts test/layernorm.test.ts
  test/embedding.test.ts test/dropout.test.ts test/loss.test.ts test/pairwise.test.ts test/infonce.test.ts
  test/euclid_score.test.ts test/gather_dot.test.ts test/topk.test.ts test/varlen.test.ts test/attention_masked.test.ts
  test/attrec_step.test.ts
)
missing=()
for f in "${files[@]}"; do [ -f "$f" ] || missing+=("$f"); done
[ ${#missing[@]} -eq 0 ] || die "test files not found: ${missing[*]}"
# Left out unless SWIFTSHADER_FULL=1: the slowest cases here (measured on SwiftShader, 2 shared cores), each with
# a kept case of the same code path: attention at S3-Rec's shape L50 D32 (67 s; "irregular large B37 H2 L50 D32"
# stays) and its varlen twin (55 s; the other varlen cases stay), matmul 2-D nn over ODD_SIZES (40 s; nt, tn, tt
# over ODD_SIZES and every other nn case stay).
# Always left out: attrec_step's trainer test (a training epoch on the sample; not a kernel check).
name_filter=(-t '^(?!.*(attrec_step the trainer takes))')
if [ -z "${SWIFTSHADER_FULL:-}" ]; then
  name_filter=(-t '^(?!.*(attention_masked S3-Rec shape L50 D32 causal|attention_masked varlen S3-Rec lengths, L50 D32 causal|matmul 2-D nn over ODD_SIZES|attrec_step the trainer takes))')
fi
rm -f "$results"
npx vitest run "${files[@]}" "${name_filter[@]}" --reporter=default --reporter=json --outputFile="$results"
status=$?

counts=$(node -e '
  try {
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const failed = r.numFailedTests + (r.numFailedTestSuites > 0 && r.numFailedTests === 0 ? r.numFailedTestSuites : 0);
    console.log(`${r.numPassedTests} ${failed} ${r.numPendingTests + (r.numTodoTests || 0)}`);
  } catch { console.log("0 1 0"); }
' "$results")
read -r passed failed skipped <<<"$counts"
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
if [ "$passed" -eq 0 ]; then echo "swiftshader: no test ran"; [ "$failed" -eq 0 ] && failed=1; fi
echo "swiftshader: adapter SwiftShader (Vulkan, core), ICD $icd; $skipped skipped (SWIFTSHADER_FULL=1 runs them); results in $results"
echo "swiftshader time: $(($(date +%s) - start)) s"
echo "swiftshader: $passed passed, $failed failed"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ]
