#!/usr/bin/env bash
# The whole GPU check in one go, from a clone (on the lent machine, from the repository root, with .gpu/ carried:
# bench/gpu/prepare_bundle.sh makes it). Installs the carried wheels, builds the random-init models
# (bench/gpu/build_models.py), then, most important first, each step with its own time limit inside one budget
# (BUDGET seconds, default 450; a step that would not fit is skipped and says so in $OUT/results/gpu/steps.txt):
#   1. bench/speed.py on the 1B-shaped model (bf16, ~300-token prompts, 128 new tokens, E=8 of 16, angular n=4):
#      eager, CUDA graphs, graphs over compiled blocks, HF generate and HF's static cache + torch.compile, the
#      streaming bound, pruning and identity-model self-speculation on the compiled graph path;
#   2. bench/exactness.py on the 1B shape in bf16: every path (CUDA graphs included) against autoregressive
#      decoding with exact mode off and on, per-kernel row invariance on CUDA, exact mode's cost;
#   3. bench/profile_step.py on the 1B shape: where a decode step's time goes, per way of computing it;
#   4. the static-step, CUDA-graph, placement and exact-mode tests;
#   5. bench/speed.py on the 8B shape (Llama-3-8B, bf16): the compiled graph path against the streaming bound,
#      HF generate, pruning and identity self-speculation;
#   6. equality checks (bench/gpu/equality_checks.py, s135m shape, fp32).
# Results go to $OUT/results/gpu (copy them to results/gpu and commit). DEVICE=cpu SMALL=--small runs the same
# steps on tiny models as a smoke test on a CPU (with SCALE=6 BUDGET=3000: a CPU is slower).
set -uo pipefail
OUT=${OUT:-/tmp/out}
DEVICE=${DEVICE:-cuda}
SMALL=${SMALL:-}
BUDGET=${BUDGET:-450}
SCALE=${SCALE:-1}  # multiplies every step's limit (a CPU smoke test needs SCALE=6 BUDGET=3000)
HERE=bench/gpu
RES="$OUT/results/gpu"
START=$(date +%s)
if [ -d .gpu/whl ]; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:-}:$PWD:$PWD/bench HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
mkdir -p "$RES"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true; } | tee "$RES/card.txt"

# step NAME SECONDS COMMAND...: run with a limit of min(SECONDS, what is left of BUDGET); log the outcome
step() {
  local name=$1 limit=$(($2 * SCALE)); shift 2
  local left=$((BUDGET - ($(date +%s) - START)))
  if [ "$left" -lt 20 ]; then echo "$name: skipped (budget spent)" | tee -a "$RES/steps.txt"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0; t0=$(date +%s)
  timeout "$limit" "$@" > "$RES/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc in $(($(date +%s) - t0)) s (limit $limit s)" | tee -a "$RES/steps.txt"
  tail -40 "$RES/$name.log"
}

EXIT=8; PRUNE=4; EXIT8B=16; PRUNE8B=8; TOKENS=128
[ -n "$SMALL" ] && { EXIT=2; PRUNE=1; EXIT8B=2; PRUNE8B=1; TOKENS=16; }
step build 150 python3 $HERE/build_models.py --out /tmp/models --tok $HERE/tok --device "$DEVICE" --only m1b s135m \
  $SMALL
COMMON=(--device "$DEVICE" --dataset custom_jsonl --data_path $HERE/prompts.jsonl --max_tokens $TOKENS
        --out "$RES")
GRAPH_RUNS=(ours_autoregressive_graphs_compiled ours_early_exit_graphs_compiled ours_self_speculative_graphs_compiled
            ours_pruned_autoregressive_graphs_compiled identity_autoregressive_graphs_compiled
            identity_early_exit_graphs_compiled identity_self_speculative_graphs_compiled)
[ "$DEVICE" = cpu ] && GRAPH_RUNS=(ours_autoregressive_compiled ours_self_speculative_compiled)
step speed_1b 170 python3 bench/speed.py --model /tmp/models/m1b "${COMMON[@]}" --samples 2 --rounds 2 \
  --exit_layer $EXIT --num_speculations 4 --prune_n $PRUNE --calibration_samples 4 --draft_vocabulary 0 \
  --skip_hf_early_exit --only hf_generate ours_autoregressive \
  $([ "$DEVICE" = cuda ] && echo hf_generate_static_compiled ours_autoregressive_graphs) "${GRAPH_RUNS[@]}"
step exactness_1b 100 python3 bench/exactness.py --model /tmp/models/m1b "${COMMON[@]}" --samples 4 \
  --dtypes bfloat16 --settings $EXIT:4 $((EXIT / 2)):3 $((EXIT + EXIT / 2)):6 \
  --draft_skip_layers $((EXIT + 1))-$((EXIT + EXIT / 2))
step profile_1b 60 python3 bench/profile_step.py --model /tmp/models/m1b "${COMMON[@]}" --max_tokens 32
step tests 60 python3 -m pytest -q -p no:cacheprovider tests/unit/test_static_steps.py tests/unit/test_placement.py \
  tests/unit/test_exact.py::test_cuda_graphs_in_bfloat16_give_autoregressive_tokens_with_exact_mode
rm -rf /tmp/models/m1b /tmp/models/m1b_identity
step build_8b 60 python3 $HERE/build_models.py --out /tmp/models --tok $HERE/tok --device "$DEVICE" --only m8b $SMALL
step speed_8b 150 python3 bench/speed.py --model /tmp/models/m8b "${COMMON[@]}" --samples 1 --rounds 1 \
  --exit_layer $EXIT8B --num_speculations 4 --prune_n $PRUNE8B --calibration_samples 2 --draft_vocabulary 0 \
  --skip_hf_early_exit --only hf_generate "${GRAPH_RUNS[@]}"
step equality 60 python3 $HERE/equality_checks.py --model /tmp/models/s135m --device "$DEVICE" --out "$RES"
echo "whole check: $(($(date +%s) - START)) s" | tee -a "$RES/steps.txt"
