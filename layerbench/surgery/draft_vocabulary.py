"""A trimmed draft vocabulary (in the spirit of frequency-ranked speculative sampling): the `size` tokens most
frequent in the calibration text, plus the stop tokens, get a draft head of their own, so a draft step multiplies
`size` rows of the LM head instead of all of them."""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import torch

from layerbench.models.addons import DraftHead, get_addons

if TYPE_CHECKING:
    from layerbench.surgery.prune_model import PruneModel


def choose_draft_vocabulary(pm: PruneModel, size: int, always: set[int]) -> dict:
    """The token ids (most frequent first) and how much of the calibration text they cover."""
    seqs, info = pm.calibration_sequences()
    params = {"size": size, "always": sorted(always)}
    return pm.calibrated("draft_vocabulary", seqs, info, params, lambda: _choose(seqs, info, size, always),
                         uses_model=False)


def _choose(seqs: list[list[int]], info: dict, size: int, always: set[int]) -> dict:
    counts = Counter(t for seq in seqs for t in seq)
    chosen = [t for t in sorted(always)] + [t for t, _ in counts.most_common() if t not in always]
    chosen = chosen[:max(size, len(always))]
    covered = sum(counts[t] for t in chosen) / sum(counts.values())
    return {"token_ids": chosen, "report": {"size": len(chosen), "calibration_token_coverage": covered,
                                            "distinct_calibration_tokens": len(counts), "calibration": info}}


def install_draft_vocabulary(pm: PruneModel, chosen: dict) -> dict:
    head = pm.family.head(pm.model)
    draft = DraftHead(head, torch.tensor(chosen["token_ids"], dtype=torch.long))
    get_addons(pm.model, create=True).draft_head = draft
    return {**chosen["report"], "num_bytes": sum(t.numel() * t.element_size()
                                                 for t in (*draft.parameters(), *draft.buffers()))}
