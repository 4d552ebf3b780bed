#!/usr/bin/env bash
# Seed B's example (examples/layer_compression_example.py), e.g.
#   ./run_layer_compression.sh --model gpt2 --rank 4 --threshold 0.4 --compute 0.3
here=$(dirname "$0")
if [ -x "$here/.venv/bin/python" ]; then PYTHON=${PYTHON:-$here/.venv/bin/python}; else PYTHON=${PYTHON:-python3}; fi
exec "$PYTHON" "$here/examples/layer_compression_example.py" "$@"
