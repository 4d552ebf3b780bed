"""A run's agreement with its matching autoregressive run (`--reference`), computed when the run finishes and
shown under its end-of-run table: auto looks for the newest matching plain autoregressive run in the output
folder; a path names one; none turns it off."""
from __future__ import annotations

import os

from layerbench.analysis.agreement import Agreement, agreement_with, promises_autoregressive, run_docs


def run_agreement(requested: str, doc: dict, records: list[dict], log_path: str) -> tuple[Agreement | None, str]:
    """(the agreement, the line the end-of-run table prints; empty when there is nothing to say)."""
    if requested == "none" or not promises_autoregressive(doc):
        return None, ""
    where = (os.path.dirname(log_path) or ".") if requested == "auto" else requested
    found = agreement_with(doc, records, run_docs([where]))
    if found is None:
        return None, (f"agreement with autoregressive decoding: no matching plain autoregressive run (with a samples "
                      f"file) in {where}; run one with the same flags to compare (see --reference)")
    return found, found.line()
