#!/usr/bin/env bash
# The whole GPU check in one go, from a clone (on the lent machine, from the repository root, with .gpu/ carried:
# bench/gpu/prepare_bundle.sh makes it). Installs the carried wheels, builds the random-init models
# (bench/gpu/build_models.py), then:
#   1. the static-step and CUDA-graph tests (tests/unit/test_static_steps.py, test_placement.py);
#   2. equality checks (bench/gpu/equality_checks.py, s135m shape, fp32): graphs on, a cuda:0/cpu split and
#      self-speculative decoding, each against the eager single-device run, with perplexity on references longer
#      than max_steps;
#   3. bench/speed.py on the 1B-shaped model (bf16, ~300-token prompts, 128 new tokens, E=8 of 16, angular n=4).
# Results go to $OUT/results/gpu (copy them to results/gpu and commit). DEVICE=cpu SMALL=--small runs the same
# steps as a smoke test on a CPU.
set -uo pipefail
OUT=${OUT:-/tmp/out}
DEVICE=${DEVICE:-cuda}
SMALL=${SMALL:-}
HERE=bench/gpu
if [ -d .gpu/whl ]; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:-}:$PWD:$PWD/bench HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
mkdir -p "$OUT/results/gpu"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true; } | tee "$OUT/results/gpu/card.txt"
timeout 180 python3 $HERE/build_models.py --out /tmp/models --tok $HERE/tok --device "$DEVICE" --only m1b s135m $SMALL \
  || exit 1
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/unit/test_static_steps.py tests/unit/test_placement.py \
  2>&1 | tail -20 | tee "$OUT/results/gpu/tests.txt"
timeout 300 python3 $HERE/equality_checks.py --model /tmp/models/s135m --device "$DEVICE" --out "$OUT/results/gpu" \
  || echo "equality checks failed"
EXIT=8; PRUNE=4
[ -n "$SMALL" ] && { EXIT=2; PRUNE=1; }
timeout 420 python3 bench/speed.py --model /tmp/models/m1b --device "$DEVICE" --dataset custom_jsonl \
  --data_path $HERE/prompts.jsonl --samples 2 --max_tokens 128 --rounds 2 --exit_layer $EXIT --num_speculations 4 \
  --prune_n $PRUNE --calibration_samples 4 --draft_vocabulary 0 --skip_hf_early_exit --out "$OUT/results/gpu" \
  || echo "speed.py failed"
