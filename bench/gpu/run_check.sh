#!/usr/bin/env bash
# The whole GPU check in one go (on the lent machine, from the repository root, with .gpu/ carried): install the
# carried wheels, build the 1B-shaped random models, run the CUDA-graph test, then bench/speed.py on m1b (bf16,
# ~300-token prompts, 128 new tokens, E=8 of 16 with the identity-layers mechanics check, angular n=4). Results go
# to $OUT/results/gpu (and results/gpu). DEVICE=cpu SMALL=--small runs the same steps as a smoke test on CPU.
set -euo pipefail
OUT=${OUT:-/tmp/out}
DEVICE=${DEVICE:-cuda}
SMALL=${SMALL:-}
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD:$PWD/bench HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total --format=csv || true
timeout 120 python3 .gpu/build_models.py --out /tmp/models --tok .gpu/tok --device "$DEVICE" --only m1b $SMALL
timeout 120 python3 -m pytest -q tests/unit/test_static_steps.py || echo "static-step tests failed"
mkdir -p "$OUT/results/gpu"
EXIT=8; PRUNE=4
[ -n "$SMALL" ] && { EXIT=2; PRUNE=1; }
timeout 420 python3 bench/speed.py --model /tmp/models/m1b --device "$DEVICE" --dataset custom_jsonl \
  --data_path .gpu/prompts.jsonl --samples 2 --max_tokens 128 --rounds 2 --exit_layer $EXIT --num_speculations 4 \
  --prune_n $PRUNE --calibration_samples 4 --draft_vocabulary 0 --skip_hf_early_exit --out "$OUT/results/gpu"
