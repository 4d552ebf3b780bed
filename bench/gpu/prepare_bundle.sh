#!/usr/bin/env bash
# Download the wheels a GPU machine without network needs for bench/gpu/run_check.sh into .gpu/whl (git-ignored):
# the pinned packages it may lack (Python 3.12, manylinux x86_64). Everything else the check needs (the model
# builder, the tokenizer, the prompts) is in this folder. Carry the wheels with the run: carry=[".gpu"].
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .gpu && mkdir -p .gpu/whl
pin() { grep -E "^$1==" requirements.lock | head -1; }
# transformers, accelerate, the metrics packages and what they need (torch, numpy and pandas are on the GPU machine)
for pkg in absl-py accelerate annotated-doc annotated-types anyio click colorama h11 hf-xet httpcore2 httpx2 \
           huggingface-hub idna joblib lxml markdown-it-py mdurl nltk portalocker psutil pydantic pydantic-core \
           pygments rapidfuzz regex rich sacrebleu safetensors shellingham six tabulate tokenizers tqdm \
           transformers truststore typer typing-inspection; do
  [ -n "$(pin "$pkg")" ] || continue
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu/whl "$(pin "$pkg")"
done
python3 -m pip wheel -q --no-deps "$(pin rouge-score)" -w .gpu/whl
du -sh .gpu
