#!/usr/bin/env bash
# Checks the MATH of bench/torch_reference.py against isoflop's f32 CPU backend (the oracle), on the CPU.
#
# bench/compare.sh compares speed on a GPU in bf16, where losses can only agree to bf16 noise. This script
# removes the noise: both sides run in float32 on the CPU (torch: --dtype float32 --device cpu --no-compile,
# no autocast, no TF32, the math attention kernel), from the same step-0 weights and token batches
# (`isoflop bench --export-inputs`), with the same config (`isoflop train --config <exported
# train_config.json>`). Then only summation order differs, and every step must agree closely:
#   - the loss of every step                          (relative, LOSS_RTOL,  default 1e-4)
#   - the gradient norm of every step (before clip)   (relative, GNORM_RTOL, default 1e-4)
#   - every parameter tensor after the last step      (relative L2 ||a-b||/||a||, PARAM_RTOL, default 1e-4)
# in two cases that together cover the optimizer's options:
#   coupled      the exported config: AdamW with decay 0.1 scaled by the lr, no clipping
#   independent  the same with decay_mode independent, weight_decay 1e-3, clip 0.5 (active: norms ~1)
# Model 128x2, T 64 (two heads, so head splitting and the QK-Norm scale shared by heads are exercised),
# vocab 512, batch 8 in micro-batches of 4 (gradient accumulation), 40 steps at peak lr 1e-2 (warmup 5, then
# cosine). Not covered: pad-token masking (the synthetic stream has no id 0), bf16 and torch.compile.
#
# Usage: PYTHONPATH=/path/to/torch bench/validate_torch_reference.sh [OUT_DIR]
#   OUT_DIR default: a fresh temporary directory. The summary is OUT_DIR/summary.json (also on stdout).
# Environment: PYTHON (default python3; must import torch), ISOFLOP (default target/release/isoflop, built if
#   missing), STEPS (default 40), LOSS_RTOL, GNORM_RTOL, PARAM_RTOL, COMPILE=1 (torch.compile the float32
#   model instead of eager; needs a C++ compiler, adds ~20 s per case).
# Exit status 1 if any check fails, 2 if torch cannot be imported. Takes about a minute on 2 cores.
# Not run in CI (CI has no torch).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-$(mktemp -d -t isoflop-torchcheck.XXXXXX)}
PY=${PYTHON:-python3}
BIN=${ISOFLOP:-target/release/isoflop}
STEPS=${STEPS:-40}
if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "error: $PY cannot import torch; put it on PYTHONPATH (e.g. PYTHONPATH=/work/torchenv)" >&2
    exit 2
fi
if [[ ! -x "$BIN" ]]; then
    cargo build --release
fi
mkdir -p "$OUT"
size=d128l2t64

echo "== exporting step-0 weights, batches and config to $OUT/inputs" >&2
"$BIN" bench --sizes 128x2:64 --vocab-size 512 --batch-size 8 --micro-batch 4 --steps "$STEPS" --warmup 0 \
    --lr 1e-2 --lr-warmup 5 --seed 0 --device cpu --export-inputs "$OUT/inputs"

# Second case: the same inputs with another optimizer config.
mkdir -p "$OUT/inputs-independent/$size"
for f in model.safetensors batches.u16 batches.json; do
    ln -sf "$(cd "$OUT/inputs/$size" && pwd)/$f" "$OUT/inputs-independent/$size/$f"
done
"$PY" - "$OUT/inputs/$size/train_config.json" "$OUT/inputs-independent/$size/train_config.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
c.update(decay_mode="independent", weight_decay=1e-3, clip=0.5)
json.dump(c, open(sys.argv[2], "w"), indent=2)
EOF

if [[ -n "${COMPILE:-}" ]]; then mode=compiled compile_flag=(); else mode=eager compile_flag=(--no-compile); fi
for case in coupled independent; do
    inputs=$OUT/inputs/$size
    [[ $case == independent ]] && inputs=$OUT/inputs-independent/$size
    echo "== $case: isoflop train (CPU backend, f32)" >&2
    rm -rf "$OUT/isoflop-$case"
    "$BIN" train --config "$inputs/train_config.json" --device cpu --out "$OUT/isoflop-$case" \
        --checkpoint-every 0 --log-every 1000 > "$OUT/isoflop-$case.log" 2>&1 \
        || { cat "$OUT/isoflop-$case.log" >&2; exit 1; }
    echo "== $case: torch_reference.py (CPU, float32, $mode)" >&2
    "$PY" bench/torch_reference.py --inputs "$inputs" --device cpu --dtype float32 "${compile_flag[@]}" \
        --warmup 0 --micro-batch 4 --save-params "$OUT/torch-$case.safetensors" \
        > "$OUT/torch-$case.json" 2> "$OUT/torch-$case.log" \
        || { cat "$OUT/torch-$case.log" >&2; exit 1; }
done

echo "== comparison" >&2
PYTHONPATH="bench${PYTHONPATH:+:$PYTHONPATH}" "$PY" - "$OUT" "$size" "${LOSS_RTOL:-1e-4}" \
    "${GNORM_RTOL:-1e-4}" "${PARAM_RTOL:-1e-4}" <<'EOF'
import glob, json, os, subprocess, sys
import torch
from torch_reference import read_safetensors_header

out, size = sys.argv[1], sys.argv[2]
loss_rtol, gnorm_rtol, param_rtol = map(float, sys.argv[3:6])

def load(path):
    tensors, _ = read_safetensors_header(path)
    data = open(path, "rb").read()
    return {n: torch.frombuffer(bytearray(data[o:o + l]), dtype=torch.float32).view(s)
            for n, (_, s, o, l) in tensors.items()}

def rel(a, b):
    return abs(a - b) / abs(a)

ok, cases = True, {}
for case in ("coupled", "independent"):
    run = os.path.join(out, f"isoflop-{case}")
    rows = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
    rows = [r for r in rows if r["kind"] == "train"]
    t = json.load(open(os.path.join(out, f"torch-{case}.json")))
    if len(rows) != len(t["losses"]):
        print(f"{case}: isoflop ran {len(rows)} steps, torch {len(t['losses'])}")
        ok = False
        continue
    loss = max(rel(r["loss"], x) for r, x in zip(rows, t["losses"]))
    gnorm = max(rel(r["grad_norm"], x) for r, x in zip(rows, t["grad_norms"]))
    ck = sorted(glob.glob(os.path.join(run, "checkpoints", "step-*")))[-1]
    a, b = load(os.path.join(ck, "model.safetensors")), load(os.path.join(out, f"torch-{case}.safetensors"))
    if set(a) != set(b):
        print(f"{case}: tensor names differ: {sorted(set(a) ^ set(b))}")
        ok = False
        continue
    pdev = {n: ((a[n] - b[n]).norm() / a[n].norm()).item() for n in a}
    worst = max(pdev, key=pdev.get)
    good = loss <= loss_rtol and gnorm <= gnorm_rtol and pdev[worst] <= param_rtol
    ok &= good
    cases[case] = {
        "config": {k: v for k, v in json.load(open(os.path.join(run, "run.json")))["config"].items()
                   if k in ("model", "batch_size", "micro_batch", "steps", "lr", "warmup_steps",
                            "weight_decay", "decay_mode", "clip")},
        "steps": len(rows),
        "loss_first": [rows[0]["loss"], t["losses"][0]],
        "loss_last": [rows[-1]["loss"], t["losses"][-1]],
        "max_rel_loss_diff": loss,
        "max_rel_grad_norm_diff": gnorm,
        "max_rel_param_l2_diff": pdev[worst],
        "worst_param": worst,
        "ok": good,
    }
    print(f"{case:<12} {len(rows)} steps, loss {rows[0]['loss']:.4f} -> {rows[-1]['loss']:.4f}: "
          f"max rel diff loss {loss:.2e}, grad norm {gnorm:.2e}, final params {pdev[worst]:.2e} ({worst})"
          f"  {'ok' if good else 'DIFFER'}", file=sys.stderr)

try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    commit = None
summary = {
    "check": "bench/torch_reference.py (float32, CPU, %s) against isoflop's CPU backend"
             % ("torch.compile" if os.environ.get("COMPILE") else "eager"),
    "date": __import__("datetime").date.today().isoformat(),
    "commit": commit,
    "torch": torch.__version__,
    "tolerances": {"loss": loss_rtol, "grad_norm": gnorm_rtol, "param_l2": param_rtol},
    "cases": cases,
    "ok": ok,
}
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
print(json.dumps(summary, indent=2))
print("all checks passed" if ok else "CHECK FAILED", file=sys.stderr)
sys.exit(0 if ok else 1)
EOF
