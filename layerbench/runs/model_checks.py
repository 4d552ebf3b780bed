"""Checks of the flags and prompts against the loaded model (its vocabulary and context), made right after
loading, before calibration or generation."""
from __future__ import annotations

from layerbench.errors import UsageError
from layerbench.runs.arguments import GenerationArguments


def check_stop_token_ids(generation: GenerationArguments, vocab_size: int) -> None:
    outside = [t for t in generation.stop_token_ids or [] if t >= vocab_size]
    if outside:
        raise UsageError(f"--stop_token_ids {outside[0]} is outside the model's vocabulary of {vocab_size} tokens "
                         f"(ids 0..{vocab_size - 1})")


def check_context(generation: GenerationArguments, prompts: dict[str, list[int]], context: int | None) -> None:
    """--max_steps and every prompt must fit the model's context (max_position_embeddings)."""
    if context is None:
        return
    if generation.max_steps > context:
        raise UsageError(f"--max_steps {generation.max_steps} exceeds the model's context of {context} tokens "
                         f"(max_position_embeddings)")
    if not prompts:  # generate.py: prompts come later, one by one
        return
    sample_id, ids = max(prompts.items(), key=lambda item: len(item[1]))
    if len(ids) >= context:
        raise UsageError(f"sample {sample_id}: its prompt has {len(ids)} tokens, the model's context is {context} "
                         f"(max_position_embeddings); use shorter prompts, a smaller --n_shot or another model")
