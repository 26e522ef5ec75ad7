#!/usr/bin/env bash
# Package check: what a user gets from `npm pack` + `npm install <tgz>` works without this checkout's
# devDependencies (tsx, TypeScript, vitest): the four entry points import from the compiled dist/, one kernel
# matches its float64 reference, S3-Rec and AttRec each take a training step, the .d.ts files type-check a
# consumer, and the installed `seqrec` bin runs (info with a clean stderr, a short training on the bundled data).
#   bash .ci/pack_check.sh          the tarball (about 1-2 minutes on 2 cores)
#   bash .ci/pack_check.sh --git    also a git install: a temporary git repository of this working tree,
#                                   `npm install git+file://...` (npm clones it, installs its devDependencies,
#                                   runs `prepare`, packs); 1-2 minutes more
# Each check prints one line (ok/FAIL); the last line is `pack: N passed, N failed`; exit status 1 on any failure.
# Needs the npm registry (the tarball's dependencies) and a WebGPU adapter. PACK_KEEP=1 keeps the temp folder.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
export EGL_PLATFORM="${EGL_PLATFORM:-surfaceless}" NODEVICE_SELECT="${NODEVICE_SELECT:-1}"
export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
git_install=0
for a in "$@"; do
  case "$a" in
    --git) git_install=1 ;;
    *) echo "usage: bash .ci/pack_check.sh [--git]"; exit 2 ;;
  esac
done
start=$(date +%s)
tmp=$(mktemp -d /tmp/seqrec-pack.XXXXXX)
trap '[ "${PACK_KEEP:-0}" = 1 ] && echo "kept $tmp" || rm -rf "$tmp"' EXIT
passed=0
failed=0
pass() { echo "ok   $1"; passed=$((passed + 1)); }
fail() {
  echo "FAIL $1"
  failed=$((failed + 1))
  if [ -n "${2:-}" ] && [ -s "$2" ]; then tail -n 15 "$2" | sed 's/^/     | /'; fi
}
finish() {
  echo "pack time: $(($(date +%s) - start)) s"
  echo "pack: $passed passed, $failed failed"
  [ "$failed" -eq 0 ] && exit 0
  exit 1
}
# check NAME CMD...: one line, the command's output shown on failure.
check() {
  local name=$1
  shift
  if "$@" >"$tmp/log" 2>&1; then pass "$name"; else fail "$name" "$tmp/log"; fi
}

# ---------------------------------------------------------------- the tarball
mkdir -p "$tmp/pack"
if npm pack --pack-destination "$tmp/pack" >"$tmp/pack.log" 2>&1; then
  pass "npm pack (prepack built dist/)"
else
  fail "npm pack" "$tmp/pack.log"
  finish
fi
tgz=$(ls "$tmp"/pack/*.tgz 2>/dev/null | head -n 1)
[ -n "$tgz" ] || { fail "npm pack wrote no tarball" "$tmp/pack.log"; finish; }
tar tzf "$tgz" | sed 's|^package/||' | sort >"$tmp/contents.txt"
contents_ok() {
  local f missing=0
  for f in package.json README.md bin/seqrec.js dist/index.js dist/index.d.ts dist/cli/seqrec.js \
    dist/engine/index.js dist/engine/index.d.ts dist/kernels/index.js dist/kernels/index.d.ts \
    dist/models/index.js dist/models/index.d.ts data/sample/Beauty.txt data/sample/Beauty_item2attributes.json \
    data/sample/Beauty_sample.txt data/sample/ml-100k-sample/train.dat data/sample/ml-100k-sample/test.dat; do
    grep -qx "$f" "$tmp/contents.txt" || { echo "missing from the tarball: $f"; missing=1; }
  done
  # No TypeScript sources (only .d.ts), no tests, benchmarks or dev files.
  if grep -E '(^|/)[^/]*\.ts$' "$tmp/contents.txt" | grep -v '\.d\.ts$'; then echo "TypeScript sources in the tarball"; missing=1; fi
  if grep -E '^(test|bench|node_modules|\.ci)/' "$tmp/contents.txt"; then echo "dev folders in the tarball"; missing=1; fi
  echo "$(wc -l <"$tmp/contents.txt") files"
  return $missing
}
check "tarball carries dist/ (JS + .d.ts), bin, data/sample and no sources" contents_ok

# ---------------------------------------------------------------- a fresh project installs it
app="$tmp/app"
mkdir -p "$app"
printf '{ "name": "seqrec-pack-check", "version": "1.0.0", "private": true, "type": "module" }\n' >"$app/package.json"
if (cd "$app" && npm install "$tgz") >"$tmp/install.log" 2>&1; then
  pass "npm install $(basename "$tgz") in a fresh project"
else
  fail "npm install <tgz> in a fresh project" "$tmp/install.log"
  finish
fi
pkg="$app/node_modules/seqrec-webgpu"
no_dev() {
  local d bad=0
  for d in tsx typescript vitest esbuild benny; do
    [ -e "$app/node_modules/$d" ] && { echo "devDependency installed: $d"; bad=1; }
  done
  ls "$app/node_modules"
  return $bad
}
check "only the runtime dependencies are installed (no tsx/TypeScript/vitest)" no_dev

# The library, from the installed package (one node process; one line per check).
cat >"$app/checks.mjs" <<'EOF'
let failures = 0;
async function check(name, fn) {
  try {
    const note = await fn();
    console.log(`ok   ${name}${note ? ` (${note})` : ''}`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}: ${String(e?.stack ?? e).split('\n').slice(0, 6).join('\n     | ')}`);
  }
}
const assert = (c, m) => { if (!c) throw new Error(m); };
const mods = {};
await check("import 'seqrec-webgpu' (root)", async () => {
  const m = (mods.root = await import('seqrec-webgpu'));
  assert(typeof m.initGpu === 'function' && typeof m.F?.matmul === 'function' && typeof m.models?.S3RecModel === 'function', 'root exports initGpu, F, models');
  const url = import.meta.resolve('seqrec-webgpu');
  assert(url.endsWith('/node_modules/seqrec-webgpu/dist/index.js'), `resolves to ${url}`);
  return 'dist/index.js';
});
await check("import 'seqrec-webgpu/engine'", async () => {
  const m = (mods.engine = await import('seqrec-webgpu/engine'));
  for (const k of ['initGpu', 'Tensor', 'backward', 'scope', 'defineKernel', 'ref']) assert(m[k] !== undefined, `missing export ${k}`);
  assert(m.initGpu === mods.root.initGpu, 'one engine module instance (root and /engine share it)');
});
await check("import 'seqrec-webgpu/kernels'", async () => {
  const m = (mods.kernels = await import('seqrec-webgpu/kernels'));
  for (const k of ['matmul', 'refMatmul', 'softmax', 'mean']) assert(typeof m[k] === 'function', `missing export ${k}`);
});
await check("import 'seqrec-webgpu/models'", async () => {
  const m = (mods.models = await import('seqrec-webgpu/models'));
  for (const k of ['S3RecModel', 'trainStep', 'encoderBatch', 'AttRec', 'uploadAttRecBatch', 'Adam', 'Adagrad']) assert(m[k] !== undefined, `missing export ${k}`);
  assert(typeof m.data?.loadS3RecDataset === 'function', 'missing data.loadS3RecDataset');
});
await check("import 'seqrec-webgpu/package.json'", async () => {
  const { createRequire } = await import('node:module');
  const pj = createRequire(import.meta.url)('seqrec-webgpu/package.json');
  assert(pj.name === 'seqrec-webgpu', pj.name);
  return pj.version;
});
const { initGpu, destroyGpu, Tensor, scope, backward, manualSeed, ref } = mods.engine;
const F = mods.kernels;
const M = mods.models;
await check('initGpu() finds an adapter', async () => {
  const g = await initGpu();
  return `${g.info.backend}, ${g.info.featureLevel}, ${g.info.description || g.info.vendor}`;
});
const rand = (n, seed) => { let s = seed >>> 0; return Float32Array.from({ length: n }, () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 2 - 1); };
await check('kernel matmul [37x53]@[53x29] matches its float64 reference', async () => {
  const a = rand(37 * 53, 1), b = rand(53 * 29, 2);
  const y = scope(() => F.matmul(Tensor.from(a, [37, 53]), Tensor.from(b, [53, 29])));
  const got = await y.toArray();
  y.dispose();
  const want = F.refMatmul(ref.f64(a, [37, 53]), ref.f64(b, [53, 29]));
  assert(got.length === want.data.length, `length ${got.length} vs ${want.data.length}`);
  let err = 0;
  for (let i = 0; i < got.length; i++) err = Math.max(err, Math.abs(got[i] - want.data[i]));
  assert(Number.isFinite(err) && err < 1e-4, `max abs error ${err}`);
  return `max abs error ${err.toExponential(2)}`;
});
const snapshot = async (model) => { const out = new Map(); for (const [k, t] of model.stateDict()) out.set(k, await t.toArray()); return out; };
const changed = async (model, before) => { let n = 0; for (const [k, t] of model.stateDict()) { const a = await t.toArray(); if (a.some((v, i) => v !== before.get(k)[i])) n++; } return n; };
await check('S3-Rec: one fine-tuning step (hidden 16, 1 layer, L 8, batch 4)', async () => {
  manualSeed(1);
  const itemSize = 30, B = 4, L = 8;
  const model = new M.S3RecModel({ itemSize, attributeSize: 6, hiddenSize: 16, numHiddenLayers: 1, maxSeqLength: L });
  const opt = new M.Adam(model, { lr: 1e-2 });
  const ids = new Int32Array(B * L), pos = new Int32Array(B * L), neg = new Int32Array(B * L);
  for (let b = 0; b < B; b++) {
    const len = 3 + b; // left padded
    for (let t = L - len; t < L; t++) {
      const i = b * L + t;
      ids[i] = 1 + ((b * 7 + t * 3) % (itemSize - 3));
      pos[i] = 1 + ((b * 7 + t * 3 + 3) % (itemSize - 3));
      neg[i] = pos[i] === 1 ? 2 : 1;
    }
  }
  const before = await snapshot(model);
  const eb = M.encoderBatch(ids, B, L);
  const loss = M.trainStep(model, opt, eb, pos, neg, undefined, true);
  const l = await loss.item();
  loss.dispose();
  eb.dispose();
  const n = await changed(model, before);
  opt.dispose();
  model.dispose();
  assert(Number.isFinite(l) && l > 0, `loss ${l}`);
  assert(n > 0, 'no parameter changed');
  return `loss ${l.toFixed(4)}, ${n} parameters updated`;
});
await check('AttRec: one training step (dim 8, L 5, T 3, batch 4)', async () => {
  manualSeed(2);
  const numItems = 12, B = 4, L = 5, T = 3;
  const model = new M.AttRec({ numUsers: B, numItems, dim: 8, seqLen: L });
  const users = Int32Array.from({ length: B }, (_, i) => i);
  const seq = Int32Array.from({ length: B * L }, (_, i) => 1 + ((i * 5) % (numItems - 1)));
  const targets = Int32Array.from({ length: B * T }, (_, i) => 1 + ((i * 7 + 2) % (numItems - 1)));
  const negatives = Int32Array.from({ length: B * T }, (_, i) => 1 + ((i * 3 + 5) % (numItems - 1)));
  const batch = M.uploadAttRecBatch(users, seq, targets, negatives, L, T);
  const opt = new M.Adagrad(model, { lr: 0.05, initialAccumulatorValue: 0.05 });
  const before = await snapshot(model);
  const loss = scope(() => model.loss(batch));
  backward(loss);
  opt.step();
  const l = await loss.item();
  loss.dispose();
  const n = await changed(model, before);
  M.disposeAttRecBatch(batch);
  opt.dispose();
  model.dispose();
  assert(Number.isFinite(l) && l > 0, `loss ${l}`);
  assert(n > 0, 'no parameter changed');
  return `loss ${l.toFixed(4)}, ${n} parameters updated`;
});
await destroyGpu();
process.exitCode = failures ? 1 : 0;
EOF
(cd "$app" && node checks.mjs) >"$tmp/checks.log" 2>"$tmp/checks.err"
status=$?
cat "$tmp/checks.log"
n_ok=$(grep -c '^ok ' "$tmp/checks.log")
n_fail=$(grep -c '^FAIL ' "$tmp/checks.log")
passed=$((passed + n_ok))
failed=$((failed + n_fail))
if [ "$status" -ne 0 ] && [ "$n_fail" -eq 0 ]; then fail "library checks (node exited with $status)" "$tmp/checks.err"; fi
if [ -s "$tmp/checks.err" ]; then echo "     (stderr of the library checks:)"; tail -n 5 "$tmp/checks.err" | sed 's/^/     | /'; fi

# The .d.ts files: a TypeScript consumer of the four entry points compiles with nothing but the installed package
# (GPU* types: dist/engine/gpu.d.ts references @webgpu/types, a dependency of `webgpu`); this checkout's compiler
# and @types/node.
types_ok() {
  cat >"$app/consumer.ts" <<'EOF'
import { initGpu, Tensor, scope, backward, type GpuInfo } from 'seqrec-webgpu/engine';
import * as F from 'seqrec-webgpu/kernels';
import { S3RecModel, AttRec, finetuneS3Rec, data } from 'seqrec-webgpu/models';
import * as root from 'seqrec-webgpu';
export async function demo(): Promise<GpuInfo> {
  const g = await initGpu();
  const w = Tensor.from(new Float32Array([0.5, -1]), [2]).requireGrad();
  const loss = scope(() => F.mean(F.square(F.mul(Tensor.from(new Float32Array([1, 2, 3, 4]), [2, 2]), w))));
  backward(loss);
  const m: S3RecModel = new S3RecModel({ itemSize: 10, attributeSize: 2 });
  const a: AttRec = new root.models.AttRec({ numUsers: 2, numItems: 5 });
  void [m, a, finetuneS3Rec, data.loadS3RecDataset];
  return g.info;
}
EOF
  cat >"$app/tsconfig.json" <<EOF
{ "compilerOptions": { "target": "ES2022", "module": "NodeNext", "moduleResolution": "NodeNext", "strict": true,
    "noEmit": true, "skipLibCheck": false, "lib": ["ES2022", "DOM"], "types": ["node"],
    "typeRoots": ["$repo/node_modules/@types"] },
  "files": ["consumer.ts"] }
EOF
  (cd "$app" && node "$repo/node_modules/typescript/bin/tsc" -p tsconfig.json)
}
if [ -e "$repo/node_modules/typescript/bin/tsc" ]; then
  check "types: a TypeScript consumer of the entry points compiles (skipLibCheck off)" types_ok
else
  echo "(types check not run: this checkout has no node_modules/typescript)"
fi

# ---------------------------------------------------------------- the installed bin
bin_info() {
  (cd "$app" && npx --no-install seqrec info >"$tmp/info.out" 2>"$tmp/info.err") || { cat "$tmp/info.out" "$tmp/info.err"; return 1; }
  grep -q '^adapter ' "$tmp/info.out" || { cat "$tmp/info.out"; return 1; }
  head -n 3 "$tmp/info.out"
}
check "npx seqrec info (the installed bin, compiled CLI)" bin_info
stderr_clean() {
  [ ! -s "$tmp/info.err" ] || { echo "stderr of seqrec info:"; cat "$tmp/info.err"; return 1; }
}
check "npx seqrec info: stderr is empty (no Dawn/Vulkan noise)" stderr_clean
json_metrics() { # FILE KEY: the last line of FILE is JSON whose metrics[KEY] is a finite number
  node -e '
    const fs = require("fs");
    const lines = fs.readFileSync(process.argv[1], "utf8").trim().split("\n");
    const r = JSON.parse(lines[lines.length - 1]);
    const v = r.metrics && r.metrics[process.argv[2]];
    if (!Number.isFinite(v)) { console.log("no finite metrics." + process.argv[2] + " in: " + lines[lines.length - 1].slice(0, 300)); process.exit(1); }
    console.log(process.argv[2] + " " + v);
  ' "$1" "$2"
}
bin_attrec() {
  (cd "$app" && npx --no-install seqrec train --model attrec --data-dir node_modules/seqrec-webgpu/data/sample/ml-100k-sample \
    --epochs 1 --dim 16 --json >"$tmp/attrec.out" 2>"$tmp/attrec.err") || { tail -n 20 "$tmp/attrec.err"; return 1; }
  json_metrics "$tmp/attrec.out" HR@50
}
check "npx seqrec train --model attrec, 1 epoch on the bundled ml-100k sample" bin_attrec
bin_finetune_default_data() {
  # No data/ folder in this project: the default --data-dir must be the package's own data/sample.
  (cd "$app" && npx --no-install seqrec finetune --dataset Beauty --epochs 1 --hidden-size 16 --layers 1 --max-len 20 \
    --json >"$tmp/ft.out" 2>"$tmp/ft.err") || { tail -n 20 "$tmp/ft.err"; return 1; }
  json_metrics "$tmp/ft.out" HR@10
}
check "npx seqrec finetune, 1 epoch, default --data-dir (the package's data/sample) from another folder" bin_finetune_default_data

# ---------------------------------------------------------------- a git install (--git)
if [ "$git_install" = 1 ]; then
  src="$tmp/src"
  git_repo() {
    # This working tree as git would clone it: tracked files and untracked ones that are not ignored.
    mkdir -p "$src"
    (git -C "$repo" ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do [ -e "$repo/$f" ] && printf '%s\0' "$f"; done) \
      | (cd "$repo" && xargs -0 cp --parents -t "$src") || return 1
    git -C "$src" init -q && git -C "$src" add -A && git -C "$src" -c user.name=pack-check -c user.email=pack-check@localhost commit -qm snapshot
  }
  check "git repository of the working tree (temporary)" git_repo
  gapp="$tmp/gitapp"
  mkdir -p "$gapp"
  printf '{ "name": "seqrec-git-check", "version": "1.0.0", "private": true, "type": "module" }\n' >"$gapp/package.json"
  git_install_ok() {
    (cd "$gapp" && npm install "git+file://$src") || return 1
    [ -e "$gapp/node_modules/seqrec-webgpu/dist/index.js" ] || { echo "no dist/ in the git install"; return 1; }
    [ ! -e "$gapp/node_modules/typescript" ] || { echo "TypeScript installed into the consumer"; return 1; }
  }
  check "npm install git+file://<clone> (prepare builds dist/)" git_install_ok
  git_use() {
    (cd "$gapp" && node --input-type=module -e '
      const { initGpu, destroyGpu, Tensor } = await import("seqrec-webgpu/engine");
      const F = await import("seqrec-webgpu/kernels");
      await initGpu();
      const y = F.add(Tensor.from(new Float32Array([1, 2]), [2]), Tensor.from(new Float32Array([3, 4]), [2]));
      const v = await y.toArray();
      if (v[0] !== 4 || v[1] !== 6) throw new Error("add: " + v);
      await destroyGpu();
    ' && npx --no-install seqrec info >/dev/null)
  }
  check "git install: import + one kernel + npx seqrec info" git_use
fi

finish
