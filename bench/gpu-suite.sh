#!/usr/bin/env bash
# GPU suite: runs the CUDA backend's checks (and, with QUICK=1 or BENCH=1, the benchmarks) on a machine
# with a GPU but no Rust toolchain, from binaries built elsewhere, inside one call of at most 10 minutes.
#
# 1. Here (x86-64, glibc not newer than the GPU machine's), from the repository root:
#      bench/gpu-suite.sh --build     # cargo build --release; the device test executable and the kernels
#                                     # criterion bench, stripped, into .gpu-bin/ (ignored by git) with
#                                     # .gpu-bin/MANIFEST naming every binary the suite must find
# 2. Carry .gpu-bin/ to the GPU machine (with the checkout) and run:
#      QUICK=1 bench/gpu-suite.sh OUT_DIR [BIN_DIR]        # BIN_DIR defaults to <repo>/.gpu-bin
#
# OUT_DIR receives exactly four files, nothing else (no checkpoints, shards, criterion folders or
# compare inputs; those live in a fresh scratch folder under WORK_DIR (default $TMPDIR or /tmp), deleted
# at the end unless KEEP_WORK=1):
#   results.json  every stage: status (passed / failed / timed out / not run), exit code, seconds, limit
#   suite.log     what ran, in order, with each stage's result line
#   env.txt       OS, glibc, driver, GPU, python/torch, and where each CUDA library and header was found
#   logs.tgz      every stage's log, the loss-curve runs' metrics.jsonl/run.json, bench.json, the compare
#                 tables and JSON, the compiled cubins (dropped first if the archive would pass 16 MiB)
#
# Stages, each under `timeout` (a stage that hits its limit is recorded as failed, "timed out"), each
# limit further capped by what is left of SUITE_BUDGET_S; a stage that finds under 10 s of it left is
# "not run" (also a failure).
# The estimate is for one H200 (or H100), by stage, for QUICK=1 (written before any GPU run; measure):
#   stage        what                                                limit var      default  estimate
#   env          env.txt: nvidia-smi, glibc, python3 + torch import  (own timeouts)   80 s     10 s
#   version      isoflop --version (the binary runs on this image)   T_VERSION        30 s      1 s
#   test:<name>  each device_* module of the device test binary      T_TEST          180 s     90 s all
#                (device_blas, device_kernels, device_train), GPU only
#                (ISOFLOP_TEST_DEVICES=gpu; the first compiles the kernels with NVRTC, ~30 s, cached)
#   train-cuda   loss curve on the GPU, STEPS=30 steps, d128 L2      T_TRAIN          90 s      5 s
#   train-cpu    the same run on the CPU, compared step by step      T_TRAIN          90 s     10 s
#   d2048        D=2048 L=24 T=512 at micro-batch 16, 3 steps,       T_D2048         150 s     45 s
#                --checkpoint-every 0 --no-final-checkpoint (writes nothing of 16 GB)
#   bench        isoflop bench, 3 sizes x (2 warmup + 5 steps)        T_BENCH         180 s     60 s
#   kernels      criterion per-kernel profiles, 0.1 s warm-up,       T_KERNELS       180 s     60 s
#                0.3 s measurement, 10 samples per case (~27 cases)
#   compare      bench/compare.sh at 512x8, 5 + 20 steps, PyTorch    T_COMPARE       240 s     90 s
#                with torch.compile (compile ~40 s of it)
#   pack         logs.tgz, size checks                                                           5 s
#   total QUICK=1: about 6.5 minutes (estimate); SUITE_BUDGET_S (default 540) caps it below the 10-minute
#   call, so the four files always come back.
# BENCH=1 runs the same stages with the full benchmark settings instead (BENCH_STEPS, default 20;
# compare.sh at 3 sizes x CMP_STEPS, default 195; criterion at 1 s + 3 s per case: 30-50 minutes, more
# than one call; raise the limits and SUITE_BUDGET_S for it). Neither: the correctness stages only.
#
# Environment: QUICK, BENCH, STEPS (loss-curve steps, 30), COMPARE (steps compared, 20), TOL (max relative
# loss difference, 0.02), SKIP_D2048=1, the T_* limits above, SUITE_BUDGET_S, WORK_DIR, KEEP_WORK,
# CMP_SIZES / CMP_STEPS / BENCH_STEPS (override the profile's). CUDA libraries: found through
# LD_LIBRARY_PATH, else the toolkit (/usr/local/cuda...), else PyTorch's own nvidia/cu13 wheels (the
# folder is then added to LD_LIBRARY_PATH and ISOFLOP_CUDA_INCLUDE, and recorded in env.txt); isoflop
# itself searches the same places (src/cuda/discover.rs).
# Exit status: 0 when every stage that ran passed and none was left out, 1 otherwise, 2 on bad usage.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ "${1:-}" == "--build" ]]; then
  set -e
  cd "$here"
  cargo build --release
  bin="$here/.gpu-bin"
  rm -rf "$bin"
  mkdir -p "$bin/tests" "$bin/benches"
  cp target/release/isoflop "$bin/"
  cargo test --release --no-run --message-format=json --test device |
    python3 -c '
import json, sys, shutil, os
dst = sys.argv[1]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-message":
        print(m["message"].get("rendered", ""), file=sys.stderr)
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    name = m["target"]["name"]
    if m["target"]["kind"] == ["test"] and name == "device":
        shutil.copy2(m["executable"], os.path.join(dst, name))
        print("copied", name)
' "$bin/tests"
  cargo bench --no-run --bench kernels --message-format=json |
    python3 -c '
import json, sys, shutil, os
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-message":
        print(m["message"].get("rendered", ""), file=sys.stderr)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["bench"]:
        shutil.copy2(m["executable"], os.path.join(sys.argv[1], m["target"]["name"]))
        print("copied bench", m["target"]["name"])
' "$bin/benches"
  # Debug symbols are most of the size; panics still name the file and line without them.
  strip --strip-debug "$bin/isoflop" "$bin"/tests/* "$bin"/benches/*
  (cd "$bin" && find . -type f ! -name MANIFEST | sed 's|^\./||' | sort) >"$bin/MANIFEST"
  for want in isoflop tests/device benches/kernels; do
    grep -qx "$want" "$bin/MANIFEST" || { echo "--build: $want was not built" >&2; exit 1; }
  done
  du -b "$bin"/isoflop "$bin"/tests/* "$bin"/benches/* | awk '{s+=$1; print} END {printf "total %.1f MB\n", s/1e6}'
  exit 0
fi

if [[ $# -lt 1 || "${1:-}" == -* ]]; then
  echo "usage: $0 OUT_DIR [BIN_DIR]   |   $0 --build" >&2
  exit 2
fi
mkdir -p "$1" || exit 2
out="$(cd "$1" && pwd)"
bin="$(cd "${2:-$here/.gpu-bin}" 2>/dev/null && pwd || echo "${2:-$here/.gpu-bin}")"
steps="${STEPS:-30}"
compare="${COMPARE:-20}"
tol="${TOL:-0.02}"
quick="${QUICK:-0}"
bench="${BENCH:-0}"
[[ "$quick" == 1 ]] && bench=1
budget="${SUITE_BUDGET_S:-540}"
t_version="${T_VERSION:-30}" t_test="${T_TEST:-180}" t_train="${T_TRAIN:-90}"
t_d2048="${T_D2048:-150}" t_bench="${T_BENCH:-180}" t_kernels="${T_KERNELS:-180}" t_compare="${T_COMPARE:-240}"
for v in "$steps" "$compare" "$budget" "$t_version" "$t_test" "$t_train" "$t_d2048" "$t_bench" \
  "$t_kernels" "$t_compare"; do
  [[ "$v" =~ ^[0-9]+$ ]] || { echo "$0: '$v' is not a whole number (STEPS, COMPARE, SUITE_BUDGET_S, T_*)" >&2; exit 2; }
done
t0=$(date +%s)

# OUT_DIR gets only the four result files; everything else goes to a scratch folder.
rm -f "$out/results.json" "$out/suite.log" "$out/env.txt" "$out/logs.tgz"
# A fresh folder even under a given WORK_DIR (it is deleted at the end).
mkdir -p "${WORK_DIR:-${TMPDIR:-/tmp}}" || exit 2
work="$(mktemp -d "${WORK_DIR:-${TMPDIR:-/tmp}}/gpu-suite.XXXXXX")" || exit 2
mkdir -p "$work/logs" "$work/cache"
logs="$work/logs"
export ISOFLOP_CACHE="$work/cache"
export RUST_BACKTRACE=1
log() { echo "[gpu-suite $(date -u +%H:%M:%S)] $*" | tee -a "$out/suite.log"; }
log "out=$out bin=$bin work=$work quick=$quick bench=$bench budget=${budget}s"

# ---- stage bookkeeping: one JSON object per stage, in order ---------------------------------------------
stages_json=""
all_ok=1
# A JSON string in plain bash (no python3 per call: its start-up is seconds on a loaded machine).
json_str() {
  local s="$1"
  s="${s//\\/\\\\}"
  s="${s//\"/\\\"}"
  s="${s//$'\n'/\\n}"
  s="${s//$'\r'/\\r}"
  s="${s//$'\t'/\\t}"
  printf '"%s"' "$(printf '%s' "$s" | tr -d '\000-\010\013\014\016-\037')"
}
# record NAME STATUS RC SECONDS LIMIT [EXTRA_JSON]
record() {
  local extra="${6:-}"
  stages_json+="${stages_json:+,
 }{\"stage\":$(json_str "$1"),\"status\":\"$2\",\"rc\":$3,\"seconds\":$4,\"limit_s\":$5${extra:+,$extra}}"
  [[ "$2" == passed ]] || all_ok=0
  log "stage $1: $2 (rc=$3, ${4}s of ${5}s)"
}
# budget_left: seconds left of the budget, less 15 s kept for packing.
budget_left() { echo $((budget - ($(date +%s) - t0) - 15)); }
# run_stage NAME LIMIT LOGFILE CMD...: runs CMD under timeout, output to LOGFILE; sets stage_rc, stage_status,
# stage_secs, stage_limit (does not record: the caller may refine the status first).
run_stage() {
  local name="$1" want="$2" logf="$3"
  shift 3
  local left
  left=$(budget_left)
  stage_limit=$((left < want ? left : want))
  if ((left < 10)); then
    stage_rc=-1 stage_secs=0 stage_status="not run (suite budget spent)"
    echo "not run: suite budget spent" >"$logf"
    return
  fi
  log "stage $name: $* (limit ${stage_limit}s)"
  local s
  s=$(date +%s.%N)
  timeout -k 10 "$stage_limit" "$@" >"$logf" 2>&1
  stage_rc=$?
  stage_secs=$(awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  if ((stage_rc == 124 || stage_rc == 137)); then
    stage_status="timed out"
    echo "[gpu-suite] timed out after ${stage_limit}s" >>"$logf"
  elif ((stage_rc == 0)); then
    stage_status=passed
  else
    stage_status=failed
  fi
}

# ---- CUDA libraries and headers: loader path, toolkit, PyTorch's nvidia/cu13 wheels ------------------------
site_dirs() {
  timeout 30 python3 -c 'import site, sys
print("\n".join(site.getsitepackages() + [site.getusersitepackages()] + sys.path))' 2>/dev/null
  for p in /opt/torch/.venv /usr/local /usr "$HOME/.local"; do
    ls -d "$p"/lib/python3*/site-packages "$p"/lib/python3*/dist-packages 2>/dev/null
  done
}
cu13=()
while read -r d; do
  [[ -n "$d" && -d "$d/nvidia/cu13" ]] || continue
  [[ " ${cu13[*]} " == *" $d/nvidia/cu13 "* ]] || cu13+=("$d/nvidia/cu13")
done < <(site_dirs)
toolkits=("${CUDA_HOME:-/nonexistent}" /usr/local/cuda /usr/local/cuda-13.0 /opt/cuda)
# find_lib FILE: the folder that provides FILE, and how ("ld path", "toolkit", "torch wheel"); empty if none.
find_lib() {
  local f="$1" d
  IFS=: read -ra ld <<<"${LD_LIBRARY_PATH:-}"
  for d in "${ld[@]}"; do [[ -n "$d" && -e "$d/$f" ]] && { echo "$d ld-library-path"; return; }; done
  d="$(ldconfig -p 2>/dev/null | awk -v f="$f" '$1 == f {print $NF; exit}')"
  [[ -n "$d" ]] && { echo "$(dirname "$d") ldconfig"; return; }
  for t in "${toolkits[@]}"; do
    for d in "$t/lib64" "$t/targets/x86_64-linux/lib"; do [[ -e "$d/$f" ]] && { echo "$d toolkit"; return; }; done
  done
  for c in "${cu13[@]}"; do [[ -e "$c/lib/$f" ]] && { echo "$c/lib torch-wheel"; return; }; done
}
libs_report=""
for f in libcuda.so.1 libnvrtc.so.13 libcublasLt.so.13; do
  found="$(find_lib "$f")"
  libs_report+="$f: ${found:-NOT FOUND}"$'\n'
  dir="${found% *}"
  case "$found" in
    *" toolkit" | *" torch-wheel") export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
  esac
done
if [[ -z "${ISOFLOP_CUDA_INCLUDE:-}" ]]; then
  for d in "${toolkits[@]}" "${cu13[@]}"; do
    [[ -f "$d/include/cuda_bf16.h" ]] && { export ISOFLOP_CUDA_INCLUDE="$d/include"; break; }
  done
fi
libs_report+="cuda_bf16.h: ${ISOFLOP_CUDA_INCLUDE:-NOT FOUND}"$'\n'
log "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-} ISOFLOP_CUDA_INCLUDE=${ISOFLOP_CUDA_INCLUDE:-}"

# ---- env.txt ---------------------------------------------------------------------------------------------
write_env() {
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -srm)"
  echo "os: $(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-?}")"
  echo "glibc: $(getconf GNU_LIBC_VERSION 2>/dev/null || ldd --version 2>/dev/null | head -1)"
  echo "cpus: $(nproc 2>/dev/null)  memory: $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo 2>/dev/null)"
  echo "commit: $(git -C "$here" rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "--- nvidia-smi"
  timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,compute_cap --format=csv 2>&1 ||
    echo "nvidia-smi failed or missing"
  echo "--- python3"
  echo "python3: $(command -v python3) $(python3 --version 2>&1)"
  timeout 45 python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
  "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")' 2>&1 | tail -1
  echo "--- CUDA libraries and headers (where found; toolkit / torch-wheel folders were added to LD_LIBRARY_PATH)"
  printf '%s' "$libs_report"
  echo "torch nvidia/cu13 folders: ${cu13[*]:-none}"
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  echo "--- binaries ($bin)"
  (cd "$bin" 2>/dev/null && ls -l isoflop tests benches 2>&1)
}
# Every slow command inside has its own timeout (20 s nvidia-smi, 45 s the torch import).
s=$(date +%s.%N)
write_env >"$out/env.txt" 2>&1
secs=$(awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
gpu_name="$(timeout 20 nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
driver="$(timeout 20 nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)"
# The stage passes when a GPU and all three CUDA libraries and the header were found.
if [[ -n "$gpu_name" && "$libs_report" != *"NOT FOUND"* ]]; then st=passed; else st=failed; fi
record env "$st" "$([[ $st == passed ]] && echo 0 || echo 1)" "$secs" 80 \
  "\"gpu\":$(json_str "$gpu_name"),\"driver\":$(json_str "$driver"),\"libraries\":$(json_str "$libs_report")"
[[ -z "$gpu_name" ]] && log "no GPU seen by nvidia-smi: every GPU stage will fail"

# ---- binaries: restore executable bits; every binary of the manifest must be there --------------------------
missing=()
if [[ -f "$bin/MANIFEST" ]]; then
  mapfile -t expected <"$bin/MANIFEST"
else
  log "no $bin/MANIFEST: build with '$0 --build' on a machine with cargo and carry .gpu-bin/"
  expected=(isoflop tests/device benches/kernels)
  missing+=(MANIFEST)
fi
for f in "${expected[@]}"; do
  if [[ -f "$bin/$f" ]]; then
    chmod +x "$bin/$f" 2>/dev/null || log "cannot make $bin/$f executable"
  else
    missing+=("$f")
  fi
done
if ((${#missing[@]})); then
  record binaries failed 1 0 0 "\"missing\":$(json_str "${missing[*]}")"
else
  record binaries passed 0 0 0 "\"count\":${#expected[@]}"
fi

# ---- version: the binary runs on this image ---------------------------------------------------------------
run_stage version "$t_version" "$logs/version.log" "$bin/isoflop" --version
record version "$stage_status" "$stage_rc" "$stage_secs" "$stage_limit" \
  "\"output\":$(json_str "$(head -c 300 "$logs/version.log")")"

# ---- GPU tests: the device_* modules of the device test binary (GPU only; the emulator tests in the same ------
# ---- binary need the build machine's checkout, so the filter leaves them out) ----------------------------------
mkdir -p "$logs/tests"
for name in device_blas device_kernels device_train; do
  f=tests/device
  if [[ ! -f "$bin/$f" ]]; then
    record "test:$name" failed 127 0 0 '"summary":"binary missing"'
    continue
  fi
  run_stage "test:$name" "$t_test" "$logs/tests/$name.log" \
    env ISOFLOP_TEST_DEVICES=gpu "$bin/$f" "$name::" --test-threads=1 --nocapture
  summary="$(grep -E '^test result' "$logs/tests/$name.log" | tail -1)"
  # The names under the last "failures:" heading of libtest's summary.
  failed_tests="$(awk '/^failures:$/ {buf = ""; f = 1; next} f && /^    [^ ]/ {buf = buf $1 " "}
    /^test result/ {f = 0} END {print buf}' "$logs/tests/$name.log")"
  record "test:$name" "$stage_status" "$stage_rc" "$stage_secs" "$stage_limit" \
    "\"summary\":$(json_str "$summary"),\"failed\":$(json_str "$failed_tests")"
done

# ---- loss curve: the same run on the GPU and on the CPU -----------------------------------------------------
train_args=(train --data bundled --d-model 128 --n-layers 2 --seq-len 128 --batch-size 8 --micro-batch 4
  --lr 3e-3 --warmup-steps 5 --eval-every 0 --eval-sequences 8 --seed 1 --steps "$steps"
  --checkpoint-every 0 --no-final-checkpoint)
for dev in cuda:0 cpu; do
  tag="${dev%%:*}"
  rm -rf "$work/train-$tag"
  run_stage "train-$tag" "$t_train" "$logs/train-$tag.log" \
    "$bin/isoflop" "${train_args[@]}" --device "$dev" --out "$work/train-$tag"
  record "train-$tag" "$stage_status" "$stage_rc" "$stage_secs" "$stage_limit"
done
curve_json="$(timeout 30 python3 - "$work/train-cuda/metrics.jsonl" "$work/train-cpu/metrics.jsonl" "$compare" "$tol" <<'PY' 2>>"$out/suite.log"
import json, sys
def losses(p):
    try:
        rows = [json.loads(l) for l in open(p) if l.strip()]
    except (OSError, ValueError) as e:
        return None, str(e)
    return {r["step"]: r["loss"] for r in rows if r.get("kind") == "train"}, None
g, eg = losses(sys.argv[1]); c, ec = losses(sys.argv[2]); n = int(sys.argv[3]); tol = float(sys.argv[4])
if g is None or c is None:
    print(json.dumps({"pass": False, "error": eg or ec})); sys.exit()
steps = sorted(set(g) & set(c))[:n]
diffs = [abs(g[s] - c[s]) / abs(c[s]) for s in steps]
worst = max(diffs) if diffs else None
ok = len(steps) == n and worst is not None and worst <= tol
print(json.dumps({"pass": ok, "steps_compared": len(steps), "tolerance": tol, "max_rel_diff": worst,
                  "gpu_first_last": [g[steps[0]], g[steps[-1]]] if steps else None,
                  "cpu_first_last": [c[steps[0]], c[steps[-1]]] if steps else None}))
PY
)"
[[ -z "$curve_json" ]] && curve_json='{"pass":false,"error":"comparison did not run (python3?)"}'
if echo "$curve_json" | grep -q '"pass": true'; then st=passed rc=0; else st=failed rc=1; fi
record loss-curve "$st" "$rc" 0 30 "\"detail\":$curve_json"

# ---- D=2048/L=24 fits at micro-batch 16 and trains (no checkpoint written) ----------------------------------
if [[ "${SKIP_D2048:-0}" != 1 ]]; then
  rm -rf "$work/train-d2048"
  run_stage d2048 "$t_d2048" "$logs/train-d2048.log" \
    "$bin/isoflop" train --device cuda:0 --data bundled --preset d2048 --batch-size 16 --micro-batch 16 \
    --steps 3 --warmup-steps 1 --eval-every 0 --eval-sequences 16 --checkpoint-every 0 --no-final-checkpoint \
    --out "$work/train-d2048"
  last="$(grep '"kind":"train"' "$work/train-d2048/metrics.jsonl" 2>/dev/null | tail -1)"
  record d2048 "$stage_status" "$stage_rc" "$stage_secs" "$stage_limit" "\"last_train_record\":${last:-null}"
else
  record d2048 "not run (SKIP_D2048=1)" -1 0 0
fi

# ---- benchmarks (QUICK=1: short; BENCH=1: full) -------------------------------------------------------------
if [[ "$bench" == 1 ]]; then
  if [[ "$quick" == 1 ]]; then
    b_args=(--warmup "${BENCH_WARMUP:-2}" --steps "${BENCH_STEPS:-5}")
    k_args=(--warm-up-time 0.1 --measurement-time 0.3 --sample-size 10 --nresamples 1000 --noplot)
    cmp_sizes="${CMP_SIZES:-512x8}" cmp_steps="${CMP_STEPS:-20}"
  else
    b_args=(--steps "${BENCH_STEPS:-20}")
    k_args=(--noplot)
    cmp_sizes="${CMP_SIZES:-512x8,1024x16,2048x24}" cmp_steps="${CMP_STEPS:-195}"
  fi
  run_stage bench "$t_bench" "$logs/bench.log" \
    "$bin/isoflop" bench --device cuda:0 "${b_args[@]}" --out "$logs/bench.json"
  record bench "$stage_status" "$stage_rc" "$stage_secs" "$stage_limit"

  run_stage kernels "$t_kernels" "$logs/kernels-bench.log" \
    env CRITERION_HOME="$work/criterion" "$bin/benches/kernels" --bench "${k_args[@]}"
  if [[ "$stage_status" == passed ]] && grep -q "kernels bench skipped" "$logs/kernels-bench.log"; then
    stage_status="failed" # no GPU: measured nothing
    log "kernel benches skipped: $(grep -m1 'kernels bench skipped' "$logs/kernels-bench.log")"
  fi
  record kernels "$stage_status" "$stage_rc" "$stage_secs" "$stage_limit"

  mkdir -p "$work/compare"
  run_stage compare "$t_compare" "$logs/compare.log" \
    env ISOFLOP="$bin/isoflop" STEPS="$cmp_steps" SIZES="$cmp_sizes" bash "$here/bench/compare.sh" "$work/compare"
  record compare "$stage_status" "$stage_rc" "$stage_secs" "$stage_limit" \
    "\"sizes\":$(json_str "$cmp_sizes"),\"steps\":$cmp_steps"
fi

# ---- results.json, logs.tgz, and the check that exactly the four promised files are there -------------------
cat >"$out/results.json" <<JSON
{"gpu":$(json_str "$gpu_name"),"driver":$(json_str "$driver"),"profile":"$([[ $quick == 1 ]] && echo quick || { [[ $bench == 1 ]] && echo bench || echo correctness; })",
 "all_passed":$([[ $all_ok == 1 ]] && echo true || echo false),"seconds":$(($(date +%s) - t0)),"budget_s":$budget,
 "stages":[
 $stages_json
 ]}
JSON
timeout 30 python3 -m json.tool "$out/results.json" >/dev/null 2>&1 || log "WARNING: results.json is not valid JSON (or python3 is missing)"

# Small outputs only: logs, metrics and manifests of the runs, bench/compare results, cubins.
pack() { # pack WITH_CUBINS
  local list="$work/pack.list"
  (
    cd "$work" || exit
    find logs -type f
    find train-cuda train-cpu train-d2048 -maxdepth 1 -type f \( -name metrics.jsonl -o -name run.json \) 2>/dev/null
    find compare -maxdepth 1 -type f \( -name '*.json' -o -name '*.log' -o -name '*.txt' \) 2>/dev/null
    [[ "$1" == 1 ]] && find cache/kernels -maxdepth 1 -name '*.cubin' 2>/dev/null
  ) >"$list"
  tar -czf "$out/logs.tgz" -C "$work" -T "$list" 2>>"$out/suite.log"
}
limit=$((16 * 1024 * 1024))
pack 1
if (($(stat -c %s "$out/logs.tgz") > limit)); then
  log "logs.tgz over 16 MiB with cubins: packing without them"
  pack 0
fi
if (($(stat -c %s "$out/logs.tgz") > limit)); then
  log "logs.tgz still over 16 MiB: keeping the last 2000 lines of each log"
  find "$work" -name '*.log' -size +1M -exec sh -c 'tail -n 2000 "$1" >"$1.t" && mv "$1.t" "$1"' _ {} \;
  pack 0
fi
[[ "${KEEP_WORK:-0}" == 1 ]] || rm -rf "$work"
log "results: $out/results.json (all_passed=$([[ $all_ok == 1 ]] && echo true || echo false), $(($(date +%s) - t0)) s)"
# The promise: exactly results.json, suite.log, env.txt, logs.tgz, each at most 16 MiB, nothing deeper.
extra="$(cd "$out" && find . -mindepth 1 ! -name results.json ! -name suite.log ! -name env.txt ! -name logs.tgz)"
[[ -n "$extra" ]] && echo "[gpu-suite] WARNING: unexpected entries in $out: $extra" >&2
for f in results.json suite.log env.txt logs.tgz; do
  (($(stat -c %s "$out/$f" 2>/dev/null || echo $((limit + 1))) <= limit)) ||
    echo "[gpu-suite] WARNING: $out/$f missing or over 16 MiB" >&2
done
[[ $all_ok == 1 ]]
