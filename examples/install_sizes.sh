#!/usr/bin/env bash
# How much each install adds: a fresh venv per extras set, `pip install REPO[EXTRAS]`, du before and after.
# Usage: bash examples/install_sizes.sh [SCRATCH_DIR]      (downloads the packages; several GB of scratch)
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
SCRATCH=${1:-$(mktemp -d)}
for combo in onnx openvino openvino,hnsw onnx,hnsw,basler openvino,hnsw,basler runtime; do
  d="$SCRATCH/$(echo "$combo" | tr ',' '_')"
  python3 -m venv "$d" && "$d/bin/pip" install -q --upgrade pip >/dev/null 2>&1
  base=$(du -sm "$d" | cut -f1)
  if "$d/bin/pip" install -q "$REPO[$combo]" > "$d.log" 2>&1; then
    echo "$combo: $(( $(du -sm "$d" | cut -f1) - base )) MB"
  else
    echo "$combo: install failed (see $d.log)"
  fi
done
d="$SCRATCH/workstation"
python3 -m venv "$d" && "$d/bin/pip" install -q --upgrade pip >/dev/null 2>&1
base=$(du -sm "$d" | cut -f1)
"$d/bin/pip" install -q torch==2.13.0 > "$d.log" 2>&1 && "$d/bin/pip" install -q "$REPO[workstation]" >> "$d.log" 2>&1 &&
  echo "workstation (torch 2.13.0 CPU, then the extra): $(( $(du -sm "$d" | cut -f1) - base )) MB"
