#!/usr/bin/env bash
# isoflop against PyTorch on the same GPU, in one call: the same model sizes, the same step-0 weights, the
# same token batches, the same optimizer and schedule. Prints tokens/s of each, the ratio per size, and the
# loss curves over the first WARMUP+STEPS (default 200) steps with a check that they agree within bf16 noise.
#
# Usage: bench/compare.sh [OUT_DIR]          (run from anywhere; OUT_DIR default bench/results/compare-<time>)
# Environment:
#   SIZES   model sizes (default 512x8,1024x16,2048x24)     WARMUP  untimed steps (default 5)
#   STEPS   timed steps (default 195)                       DEVICE  isoflop --device (default cuda:0)
#   ISOFLOP the isoflop binary (default target/release/isoflop, built if missing)
#   PYTHON  python with torch (default python3)              BATCH   global batch (default: isoflop's, 256)
#   STEP1_RTOL  step-1 loss agreement (same weights, same batch; forward numerics only; default 0.01)
#   CURVE_RTOL  agreement of the 10-step moving averages of the loss at every step (default 0.03)
# Exit status 1 if a check fails (everything is still printed and saved).
# The PyTorch side's math is checked separately, exactly (f32, CPU) against isoflop's CPU backend, by
# bench/validate_torch_reference.sh; run that first after changing bench/torch_reference.py.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/results/compare-$(date +%Y%m%d-%H%M%S)}
SIZES=${SIZES:-512x8,1024x16,2048x24}
WARMUP=${WARMUP:-5}
STEPS=${STEPS:-195}
DEVICE=${DEVICE:-cuda:0}
PY=${PYTHON:-python3}
BIN=${ISOFLOP:-target/release/isoflop}
if [[ ! -x "$BIN" ]]; then
    cargo build --release
fi
mkdir -p "$OUT"
common=(--sizes "$SIZES" --warmup "$WARMUP" --steps "$STEPS" --device "$DEVICE")
if [[ -n "${BATCH:-}" ]]; then common+=(--batch-size "$BATCH"); fi

echo "== exporting step-0 weights and batches to $OUT/inputs" >&2
"$BIN" bench "${common[@]}" --export-inputs "$OUT/inputs"

echo "== isoflop bench" >&2
"$BIN" bench "${common[@]}" --out "$OUT/isoflop.json" 2> >(tee "$OUT/isoflop.log" >&2)

echo "== PyTorch" >&2
for dir in "$OUT"/inputs/*/; do
    label=$(basename "$dir")
    # Same micro-batch as isoflop chose, so the comparison is like for like.
    mb=$("$PY" -c 'import json,sys
r=json.load(open(sys.argv[1]))
for s in r["results"]:
    m=s["model"]; l="d%dl%d" % (m["d_model"], m["n_layers"])
    if s["size"].get("seq_len"): l += "t%d" % s["size"]["seq_len"]
    if l == sys.argv[2]: print(s["micro_batch"])' "$OUT/isoflop.json" "$label")
    "$PY" bench/torch_reference.py --inputs "$dir" --warmup "$WARMUP" --steps "$STEPS" \
        ${mb:+--micro-batch "$mb"} > "$OUT/torch-$label.json" 2> >(tee "$OUT/torch-$label.log" >&2)
done

echo "== comparison" >&2
"$PY" - "$OUT" "${STEP1_RTOL:-0.01}" "${CURVE_RTOL:-0.03}" <<'EOF' | tee "$OUT/compare.txt"
import glob, json, os, sys
out, step1_rtol, curve_rtol = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
iso = json.load(open(os.path.join(out, "isoflop.json")))
def label(s):
    m = s["model"]; l = "d%dl%d" % (m["d_model"], m["n_layers"])
    return l + ("t%d" % s["size"]["seq_len"] if s["size"].get("seq_len") else "")
def smooth(x, w=10):
    return [sum(x[max(0, i - w + 1):i + 1]) / len(x[max(0, i - w + 1):i + 1]) for i in range(len(x))]
ok = True
print(f"isoflop: {iso['device']}  commit {iso['git_commit']}")
print(f"{'size':<10} {'isoflop tok/s':>14} {'torch tok/s':>12} {'ratio':>7} {'step-1 loss iso/torch':>24} {'max rel dev (10-step avg)':>26}  verdict")
curves = []
for s in iso["results"]:
    l = label(s)
    tp = os.path.join(out, f"torch-{l}.json")
    if not os.path.exists(tp):
        print(f"{l:<10} no torch result"); ok = False; continue
    t = json.load(open(tp))
    a, b = s["losses"], t["losses"]
    n = min(len(a), len(b))
    sa, sb = smooth(a[:n]), smooth(b[:n])
    dev = max(abs(x - y) / abs(y) for x, y in zip(sa, sb))
    s1 = abs(a[0] - b[0]) / abs(b[0])
    good = s1 <= step1_rtol and dev <= curve_rtol
    ok &= good
    print(f"{l:<10} {s['tokens_per_s']:>14.0f} {t['tokens_per_s']:>12.0f} {s['tokens_per_s'] / t['tokens_per_s']:>7.3f} "
          f"{a[0]:>11.4f}/{b[0]:<11.4f} {dev:>26.4f}  {'ok' if good else 'DIFFER'} (step-1 rel {s1:.2e})")
    curves.append((l, a[:n], b[:n]))
for l, a, b in curves:
    print(f"\nloss curve {l} (step: isoflop torch diff)")
    for i in list(range(0, len(a), 10)) + ([len(a) - 1] if (len(a) - 1) % 10 else []):
        print(f"  {i + 1:>4}: {a[i]:.4f} {b[i]:.4f} {a[i] - b[i]:+.4f}")
print("\nall checks passed" if ok else f"\nCHECK FAILED: step-1 rel tol {step1_rtol}, curve rel tol {curve_rtol}")
sys.exit(0 if ok else 1)
EOF
