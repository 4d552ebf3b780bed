# Shared settings and helpers for run_tests and run_tests_base (sourced, not run).
# Every setting can be overridden from the environment, e.g.
#   NUM_SAMPLES=3 MAX_STEPS=32 ./run_tests_base && NUM_SAMPLES=3 MAX_STEPS=32 ./run_tests
if [ -x .venv/bin/python ]; then PYTHON=${PYTHON:-.venv/bin/python}; else PYTHON=${PYTHON:-python3}; fi
MODEL=${MODEL:-}                          # empty: the embedded SmolLM2-135M-Instruct
DATASETS=${DATASETS:-aclsum_summarization}
NUM_SAMPLES=${NUM_SAMPLES:-10}
MAX_STEPS=${MAX_STEPS:-128}
STRATEGY=${STRATEGY:-autoregressive}
EXIT_LAYER=${EXIT_LAYER:--1}
NUM_SPECULATIONS=${NUM_SPECULATIONS:--1}
LAUNCHER=${LAUNCHER:-$PYTHON}             # e.g. "torchrun --nproc_per_node 2"
OUTPUT_DIR=${OUTPUT_DIR:-logs/sweep}
EXTRA_ARGS=${EXTRA_ARGS:-}
SPEC_EXIT=${SPEC_EXIT:-20}                # self-speculative runs (exit adapter and its base)
SPEC_D=${SPEC_D:-4}
SPEC_CONFIDENCE=${SPEC_CONFIDENCE:-0.6}         # bench/draft_confidence.py: best with a draft vocabulary
SPEC_VOCAB=${SPEC_VOCAB:-2048}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}

mkdir -p "$OUTPUT_DIR/console"

# run_one DATASET TAG [benchmark flags...]: one benchmark run with the sweep's shared generation settings;
# its console output is also saved to $OUTPUT_DIR/console/DATASET_TAG.log
run_one() {
  local dataset=$1 tag=$2
  shift 2
  local model_args=()
  [ -n "$MODEL" ] && model_args=(--model "$MODEL")
  echo "=== $dataset $tag ==="
  # shellcheck disable=SC2086
  $LAUNCHER benchmark.py "${model_args[@]}" --dataset "$dataset" --num_samples "$NUM_SAMPLES" \
    --max_steps "$MAX_STEPS" --generation_strategy "$STRATEGY" --exit_layer "$EXIT_LAYER" \
    --num_speculations "$NUM_SPECULATIONS" --output_dir "$OUTPUT_DIR" "$@" $EXTRA_ARGS \
    2>&1 | tee "$OUTPUT_DIR/console/${dataset}_${tag}.log"
}

# run_speculative DATASET TAG [benchmark flags...]: self-speculative at E=$SPEC_EXIT, d=$SPEC_D
run_speculative() {
  local dataset=$1 tag=$2
  shift 2
  STRATEGY=self_speculative EXIT_LAYER=$SPEC_EXIT NUM_SPECULATIONS=$SPEC_D run_one "$dataset" "$tag" "$@"
}

print_tables() {
  "$PYTHON" analyze_logs.py "$OUTPUT_DIR"
}
