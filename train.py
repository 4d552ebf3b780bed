"""Train a causal LM for early exit with LayerSkip's recipe (layer dropout rising with depth, early-exit loss
through the shared LM head) and save it as a standard Hugging Face checkpoint. The code lives in
`layerbench.training`.

    python train.py --output_dir runs/layerskip --max_train_steps 200 --layer_dropout_max 0.1 \
        --early_exit_loss_scale 1.0 --early_exit_curriculum rotational
    accelerate launch train.py ...             # several processes: DDP, or FSDP from accelerate's config
    python benchmark.py --model runs/layerskip --generation_strategy self_speculative --exit_layer 15 \
        --num_speculations 2
"""
import os
import signal
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from layerbench.training.cli import main  # noqa: E402

if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
