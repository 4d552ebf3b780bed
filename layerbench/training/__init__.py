"""Training for early exit (`train.py`): LayerSkip's layer dropout and early-exit loss (Elhoushi et al. 2024) on any
supported causal LM, so the checkpoint drafts well with its own first layers (self-speculative decoding) and
tolerates removed layers (LayerDrop, Fan et al. 2019).

One job per file: `arguments.py` (the flags, as dataclasses, read without torch), `flag_checks.py` (checks that
need no model), `layer_dropout.py` (p(l, t) and the per-sample skipping of a layer), `early_exit_loss.py` (exit
weights, curricula, the loss), `data.py` (examples and the deterministic batch order), `forward.py` (the training
pass over the Hugging Face modules), `checkpoint.py` (training state saved and resumed), `saving.py` (the final
Hugging Face checkpoint and its model card), `training_log.py` (the JSON log), `trainer.py` (the accelerate loop)
and `cli.py` (the entry point).
"""
