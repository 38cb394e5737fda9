#!/usr/bin/env bash
# Install the pinned NVRTC 13.0 toolchain (headers + libnvrtc) from PyPI into target/nvrtc-13.0.
#
# Used by tests/device/nvrtc_compile.rs (compile check of kernels/*.cu for sm_90a) and the emulated-device
# tests (tests/device/util/harness.rs: the emulation build takes cuda_bf16.h from the runtime wheel).
# Idempotent: does nothing when the marker file exists. Everything goes in ONE `pip install --target`
# call: a second call into the same target silently skips the shared `nvidia/` folder.
#
# Usage: .ci/install-nvrtc.sh [DIR]   (default: <repo>/target/nvrtc-13.0)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:-$here/target/nvrtc-13.0}"
marker="$dir/.installed-13.0"
if [[ -f "$marker" ]]; then
  exit 0
fi
mkdir -p "$(dirname "$dir")"
# Several test binaries may ask at once: one installs, the others wait and then find the marker.
exec 9>"$dir.lock"
flock 9
if [[ -f "$marker" ]]; then
  exit 0
fi
python="${PYTHON:-python3}"
tmp="$dir.partial.$$"
rm -rf "$tmp"
mkdir -p "$(dirname "$dir")"
"$python" -m pip install --quiet --disable-pip-version-check --no-cache-dir --no-deps \
  --target "$tmp" \
  nvidia-cuda-nvrtc==13.0.88 \
  nvidia-cuda-runtime==13.0.96 \
  nvidia-cuda-cccl==13.0.85 \
  nvidia-cuda-crt==13.0.88
for f in nvidia/cu13/include/cuda_bf16.h nvidia/cu13/include/cccl/cuda/std/cstdint nvidia/cu13/include/crt/mma.h; do
  if [[ ! -e "$tmp/$f" ]]; then
    echo "install-nvrtc.sh: $f missing after pip install into $tmp" >&2
    exit 1
  fi
done
if ! ls "$tmp"/nvidia/cu13/lib/libnvrtc.so* >/dev/null 2>&1; then
  echo "install-nvrtc.sh: libnvrtc.so* missing under $tmp/nvidia/cu13/lib" >&2
  exit 1
fi
rm -rf "$dir"
mv "$tmp" "$dir"
touch "$marker"
echo "install-nvrtc.sh: NVRTC 13.0 installed in $dir" >&2
