"""Benchmark a (pruned / compressed) causal LM: generate over a dataset, measure quality and speed, and write
one JSON log per run plus per-sample records. The steps live in `layerbench.runs`.

    python benchmark.py --num_samples 5 --max_steps 64
    torchrun --nproc_per_node 2 benchmark.py --dataset aclsum_summarization --generation_strategy self_speculative \
        --exit_layer 20 --num_speculations 6 --prune_method angular --prune_n 2
"""
import os
import signal
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from layerbench.runs.cli import main  # noqa: E402

if __name__ == "__main__":
    # a process started in the background by a non-interactive shell inherits "ignore SIGINT"; Ctrl-C (or a
    # scheduler's SIGINT) must still stop the run and write what finished
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
