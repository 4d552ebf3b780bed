#!/usr/bin/env bash
# Build .gpu/ (git-ignored), everything a GPU machine without network needs for bench/gpu/run_check.sh: wheels of
# the pinned packages it may lack (Python 3.12, manylinux x86_64) and the model builder, tokenizer and prompts
# from ../shared/gpu. Carry it with the run: carry=[".gpu"].
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED=${SHARED:-../shared/gpu}
rm -rf .gpu && mkdir -p .gpu/whl
cp -r "$SHARED/build_models.py" "$SHARED/tok" "$SHARED/prompts.jsonl" .gpu/
pin() { grep -E "^$1==" requirements.lock | head -1; }
# transformers, the metrics packages and what they need (torch, numpy and pandas are on the GPU machine)
for pkg in absl-py annotated-doc annotated-types anyio click colorama h11 hf-xet httpcore2 httpx2 huggingface-hub \
           idna joblib lxml markdown-it-py mdurl nltk portalocker pydantic pydantic-core pygments rapidfuzz regex \
           rich sacrebleu safetensors shellingham six tabulate tokenizers tqdm transformers truststore typer \
           typing-inspection; do
  [ -n "$(pin "$pkg")" ] || continue
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu/whl "$(pin "$pkg")"
done
python3 -m pip wheel -q --no-deps "$(pin rouge-score)" -w .gpu/whl
du -sh .gpu
