#!/usr/bin/env bash
# GPU suite: runs the CUDA backend's checks on a machine with a GPU but no Rust toolchain, from binaries
# built elsewhere, and writes logs plus results.json into OUT_DIR.
#
# 1. On the build machine (x86-64, glibc not newer than the GPU machine's), from the repository root:
#      bench/gpu-suite.sh --build            # = cargo build --release; cargo test --release --no-run
#                                            #   --message-format=json; copies isoflop, the tests/gpu_*
#                                            #   executables and the kernels criterion bench into .gpu-bin/
#                                            #   (ignored by git)
# 2. Carry .gpu-bin/ to the GPU machine (with the checkout) and run:
#      bench/gpu-suite.sh OUT_DIR [BIN_DIR]  # BIN_DIR defaults to <repo>/.gpu-bin
#
# What it runs: nvidia-smi; every GPU test executable in BIN_DIR/tests (kernels vs the CPU reference,
# cuBLASLt products, the training step vs the CPU backend, determinism, error paths); `isoflop train
# --device cuda:0` and `--device cpu` on the bundled sample with one seed, comparing the first steps'
# losses; a d2048 (D=2048, L=24, T=512) run at micro-batch 16 to check it fits in memory and to record
# throughput. The CUDA libraries (libcuda, libnvrtc.so.13, libcublasLt.so.13) are found through
# LD_LIBRARY_PATH, extended here with the toolkit's lib64. Kernel cubins are cached in
# OUT_DIR/cache/kernels (ISOFLOP_CACHE=OUT_DIR/cache).
#
# With BENCH=1 it then runs the benchmarks of the benchmark issue in the same call: `isoflop bench` (JSON in
# OUT_DIR/bench.json), the per-kernel criterion profiles (OUT_DIR/kernels-bench.log), and bench/compare.sh
# against PyTorch with this isoflop (OUT_DIR/compare/); BENCH_STEPS / CMP_STEPS / CMP_SIZES pass through as
# their --steps, STEPS and SIZES (defaults 20, 195 and compare.sh's sizes — size the steps to the time the
# GPU is lent for: the 2048x24 size at batch 256 takes seconds per step).
#
# Environment: STEPS (loss-curve steps, default 30), COMPARE (steps compared, default 20), TOL (max
# relative loss difference, default 0.02), SKIP_D2048=1 to skip the large run, BENCH=1 for the benchmarks.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ "${1:-}" == "--build" ]]; then
  set -e
  cd "$here"
  cargo build --release
  bin="$here/.gpu-bin"
  rm -rf "$bin"
  mkdir -p "$bin/tests"
  cp target/release/isoflop "$bin/"
  cargo test --release --no-run --message-format=json |
    python3 -c '
import json, sys, shutil, os
dst = sys.argv[1]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    name = m["target"]["name"]
    if m["target"]["kind"] == ["test"] and name.startswith("gpu_") and name != "gpu_nvrtc_build":
        shutil.copy2(m["executable"], os.path.join(dst, name))
        print("copied", name)
' "$bin/tests"
  mkdir -p "$bin/benches"
  cargo bench --no-run --bench kernels --message-format=json |
    python3 -c '
import json, sys, shutil, os
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["bench"]:
        shutil.copy2(m["executable"], os.path.join(sys.argv[1], m["target"]["name"]))
        print("copied bench", m["target"]["name"])
' "$bin/benches"
  ls -la "$bin" "$bin/tests" "$bin/benches"
  exit 0
fi

if [[ $# -lt 1 ]]; then
  echo "usage: $0 OUT_DIR [BIN_DIR]   |   $0 --build" >&2
  exit 2
fi
out="$(mkdir -p "$1" && cd "$1" && pwd)"
bin="${2:-$here/.gpu-bin}"
steps="${STEPS:-30}"
compare="${COMPARE:-20}"
tol="${TOL:-0.02}"
mkdir -p "$out/tests" "$out/cache"
export ISOFLOP_CACHE="$out/cache"
export RUST_BACKTRACE=1
for d in "${CUDA_HOME:-/nonexistent}/lib64" /usr/local/cuda/lib64 /usr/local/cuda-13.0/lib64 \
  /usr/local/cuda/targets/x86_64-linux/lib; do
  if [[ -d "$d" ]]; then
    export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
done
[[ -d /usr/local/cuda/include ]] && export ISOFLOP_CUDA_INCLUDE="${ISOFLOP_CUDA_INCLUDE:-/usr/local/cuda/include}"
log() { echo "[gpu-suite] $*" | tee -a "$out/suite.log"; }
log "out=$out bin=$bin LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"

if [[ ! -x "$bin/isoflop" ]]; then
  log "missing $bin/isoflop: build with '$0 --build' on a machine with cargo and carry .gpu-bin/"
  exit 2
fi

nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || log "nvidia-smi failed (see nvidia-smi.txt)"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >>"$out/nvidia-smi.txt" 2>&1 || true
gpu_name="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
driver="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)"
ls -la "$(dirname "$(ldconfig -p 2>/dev/null | awk '/libnvrtc.so.13/{print $NF; exit}')" 2>/dev/null)" \
  >"$out/cuda-libs.txt" 2>&1 || true

json_escape() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1" 2>/dev/null || echo "\"$1\""; }
tests_json=""
all_ok=1
for t in "$bin"/tests/gpu_*; do
  [[ -x "$t" ]] || continue
  name="$(basename "$t")"
  log "running $name"
  start=$(date +%s.%N)
  # GPU only: the emulated device needs the build machine's checkout path and a C++ compiler (CI runs it).
  ISOFLOP_TEST_DEVICES=gpu "$t" --test-threads=1 --nocapture >"$out/tests/$name.log" 2>&1
  rc=$?
  secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  status=passed
  [[ $rc -ne 0 ]] && status=failed && all_ok=0
  if grep -q "SKIPPED\|running on the emulated device only" "$out/tests/$name.log"; then
    status="skipped (no GPU seen)"
    all_ok=0
  fi
  summary="$(grep -E '^test result' "$out/tests/$name.log" | tail -1)"
  log "$name: $status rc=$rc ${secs}s $summary"
  tests_json+="${tests_json:+,}\"$name\":{\"rc\":$rc,\"seconds\":$secs,\"status\":\"$status\",\"summary\":$(json_escape "$summary")}"
done

# Loss curve: the same run on the GPU and on the CPU.
train_args=(train --data bundled --d-model 128 --n-layers 2 --seq-len 128 --batch-size 8 --micro-batch 4
  --lr 3e-3 --warmup-steps 5 --eval-every 0 --eval-sequences 8 --seed 1 --steps "$steps" --checkpoint-every 0)
for dev in cuda:0 cpu; do
  tag="${dev%%:*}"
  rm -rf "$out/train-$tag"
  log "isoflop train --device $dev ($steps steps)"
  "$bin/isoflop" "${train_args[@]}" --device "$dev" --out "$out/train-$tag" >"$out/train-$tag.log" 2>&1
  echo "rc=$?" >>"$out/train-$tag.log"
done
curve_json="$(python3 - "$out/train-cuda/metrics.jsonl" "$out/train-cpu/metrics.jsonl" "$compare" "$tol" <<'PY' 2>>"$out/suite.log"
import json, sys
def losses(p):
    try:
        rows = [json.loads(l) for l in open(p) if l.strip()]
    except OSError as e:
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
log "loss curve: $curve_json"
echo "$curve_json" | grep -q '"pass": true' || all_ok=0

# The target shape fits at micro-batch 16 and trains.
big_json='{"skipped":true}'
if [[ "${SKIP_D2048:-0}" != 1 ]]; then
  log "isoflop train --preset d2048 --micro-batch 16 (3 steps)"
  rm -rf "$out/train-d2048"
  "$bin/isoflop" train --device cuda:0 --data bundled --preset d2048 --batch-size 16 --micro-batch 16 \
    --steps 3 --warmup-steps 1 --eval-every 0 --eval-sequences 16 --checkpoint-every 0 --keep-checkpoints 1 \
    --out "$out/train-d2048" >"$out/train-d2048.log" 2>&1
  rc=$?
  last="$(grep '"kind":"train"' "$out/train-d2048/metrics.jsonl" 2>/dev/null | tail -1)"
  big_json="{\"rc\":$rc,\"last_train_record\":${last:-null}}"
  [[ $rc -ne 0 ]] && all_ok=0
  log "d2048: rc=$rc $last"
  rm -rf "$out/train-d2048/checkpoints" 2>/dev/null || true
fi

# Benchmarks (BENCH=1): throughput/MFU, per-kernel profiles, PyTorch side by side.
bench_json='{"skipped":true}'
if [[ "${BENCH:-0}" == 1 ]]; then
  log "isoflop bench (${BENCH_STEPS:-20} steps per size)"
  "$bin/isoflop" bench --device cuda:0 --steps "${BENCH_STEPS:-20}" --out "$out/bench.json" >"$out/bench.log" 2>&1
  rc_bench=$?
  rc_kernels=127
  if [[ -x "$bin/benches/kernels" ]]; then
    log "kernel benches (criterion)"
    CRITERION_HOME="$out/criterion" "$bin/benches/kernels" --bench >"$out/kernels-bench.log" 2>&1
    rc_kernels=$?
    if grep -q "kernels bench skipped" "$out/kernels-bench.log"; then
      log "kernel benches skipped: $(grep -m1 'kernels bench skipped' "$out/kernels-bench.log")"
      rc_kernels=3
    fi
  else
    log "no $bin/benches/kernels: rebuild with '$0 --build'"
  fi
  log "bench/compare.sh (${CMP_STEPS:-195} steps per size)"
  env ISOFLOP="$bin/isoflop" STEPS="${CMP_STEPS:-195}" ${CMP_SIZES:+SIZES="$CMP_SIZES"} \
    "$here/bench/compare.sh" "$out/compare" >"$out/compare.log" 2>&1
  rc_compare=$?
  bench_json="{\"isoflop_bench_rc\":$rc_bench,\"kernels_bench_rc\":$rc_kernels,\"compare_rc\":$rc_compare}"
  log "benchmarks: $bench_json"
  [[ $rc_bench -ne 0 || $rc_kernels -ne 0 || $rc_compare -ne 0 ]] && all_ok=0
fi

cat >"$out/results.json" <<JSON
{"gpu":$(json_escape "$gpu_name"),"driver":$(json_escape "$driver"),"all_passed":$([[ $all_ok == 1 ]] && echo true || echo false),
 "tests":{$tests_json},
 "loss_curve":$curve_json,
 "d2048_micro_batch_16":$big_json,
 "benchmarks":$bench_json}
JSON
log "results: $out/results.json (all_passed=$([[ $all_ok == 1 ]] && echo true || echo false))"
[[ $all_ok == 1 ]]
