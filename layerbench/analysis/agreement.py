"""Agreement with autoregressive decoding: a greedy run of any other path (self-speculative or layer-skip
speculation, CUDA graphs or fixed-shape steps, compiled blocks, a split model) promises autoregressive decoding's
tokens. Its matching autoregressive run is a plain one (full model, eager, uncompiled, one device, greedy) with
every flag that decides the output equal (model, the dtype that ran, pruning and calibration, data and samples,
seed, max_steps, stopping); among several, one with the same exact mode is preferred, then the newest.

Per pair: over the sample ids both decoded, how many predictions are identical, and for those that are not, the
mean index of the first differing token (token ids are logged per sample; older logs without them are compared
by text, the index then counting characters), beside the change in quality it causes (per-sample metrics, paired).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from tabulate import tabulate

from layerbench.analysis.paired import read_records, samples_path
from layerbench.analysis.tables import CONFIG, Skip, iter_json_files, read_run, run_row

# flags that do not decide a given sample's greedy tokens (how they are computed, which samples, what is logged)
NOT_OUTPUT_FLAGS = {"num_samples", "generation_strategy", "exit_layer", "num_speculations", "draft_confidence", "draft_vocabulary",
             "exit_adapter", "draft_skip_layers", "draft_skip", "cuda_graphs", "compile", "exact", "linear_kernel",
             "attention_backend", "device", "device_map", "max_memory", "dtype", "output_dir", "resume", "warmup",
             "bootstrap_resamples", "execute_code", "execution_timeout", "perplexity", "save_pruned_model",
             "no_calibration_cache", "verify_cache", "reference", "lm_eval_tasks", "lm_eval_limit",
             "lm_eval_num_fewshot", "lm_eval_batch_size", "temperature", "top_k", "top_p"}
QUALITY = ("rouge1", "rouge2", "rougeL", "rougeLsum", "sentence_bleu", "exact_match", "edit_distance")


def output_key(doc: dict) -> tuple:
    """Everything that decides a greedy run's tokens: the flags not in NOT_OUTPUT_FLAGS, and the dtype that ran."""
    args = {k: v for k, v in doc["args"].items() if k not in NOT_OUTPUT_FLAGS}
    return doc["model"]["name"], doc["model"].get("dtype"), tuple(sorted((k, repr(v)) for k, v in args.items()))


def _setting(doc: dict, name: str) -> str:
    return str(doc.get("generation", {}).get(name) or "off")


def decoding_mode(doc: dict) -> str | None:
    """The log's generation.mode: "full_model" (autoregressive), "early_exit", or a speculative strategy's name."""
    return doc.get("generation", {}).get("mode")


def is_plain_autoregressive(doc: dict) -> bool:
    """Full model, greedy, eagerly decoded on one device, uncompiled: the reference every other path must match."""
    args = doc["args"]
    return (decoding_mode(doc) == "full_model" and not args.get("sample") and not args.get("device_map")
            and _setting(doc, "cuda_graphs").startswith("off") and _setting(doc, "compile").startswith("off"))


def promises_autoregressive(doc: dict) -> bool:
    """A greedy run that is not plain autoregressive decoding but promises its tokens (early exit does not)."""
    if doc["args"].get("sample") or is_plain_autoregressive(doc):
        return False
    return decoding_mode(doc) not in (None, "early_exit")


def exact_mode(doc: dict) -> bool:
    return _setting(doc, "exact").startswith("on")


def find_reference(doc: dict, candidates: list[tuple[str, dict]]) -> tuple[str, dict] | None:
    """The matching plain autoregressive run among (path, doc) candidates: the same exact mode first, then the
    newest."""
    key = output_key(doc)
    matches = [(p, c) for p, c in candidates if c.get("run_id") != doc.get("run_id") and is_plain_autoregressive(c)
               and output_key(c) == key]
    if not matches:
        return None
    return max(matches, key=lambda pc: (exact_mode(pc[1]) == exact_mode(doc), pc[1].get("run_id", "")))


def first_difference(a: dict, b: dict) -> tuple[int | None, str]:
    """Index of the first differing token of two sample records (None: identical), and its unit."""
    if isinstance(a.get("token_ids"), list) and isinstance(b.get("token_ids"), list):
        x, y, unit = a["token_ids"], b["token_ids"], "token"
    else:
        x, y, unit = a.get("prediction", ""), b.get("prediction", ""), "character"
    if x == y:
        return None, unit
    return next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y))), unit


@dataclass
class Agreement:
    reference: str  # the reference run's JSON path
    reference_run_id: str | None
    reference_exact: bool
    samples: int  # sample ids both decoded
    identical: int
    mean_first_difference: float | None  # over the differing samples
    unit: str  # "token" or "character"
    quality_change: dict  # metric -> mean over shared ids of (this run - reference)

    @property
    def fraction_identical(self) -> float | None:
        return self.identical / self.samples if self.samples else None

    def line(self) -> str:
        """One line for the end-of-run table."""
        head = f"agreement with autoregressive run {self.reference_run_id} ({self.reference})"
        if not self.samples:
            return f"{head}: no sample id in common"
        if self.identical == self.samples:
            return f"{head}: {self.identical}/{self.samples} predictions identical"
        return (f"{head}: DIFFERS: {self.identical}/{self.samples} predictions identical; the others part at "
                f"{self.unit} {self.mean_first_difference:.1f} on average (exact mode "
                f"{'on' if self.reference_exact else 'off'} in the reference)")

    def as_dict(self) -> dict:
        return {**self.__dict__, "fraction_identical": self.fraction_identical}


def agreement(records: list[dict], reference_path: str, reference: dict, reference_records: list[dict]) -> Agreement:
    ref = {r["sample_id"]: r for r in reference_records}
    shared = [(r, ref[r["sample_id"]]) for r in records if r["sample_id"] in ref]
    firsts = [first_difference(a, b) for a, b in shared]
    differing = [i for i, _ in firsts if i is not None]
    change = {}
    for name in QUALITY:
        pairs = [(a.get("metrics", {}).get(name), b.get("metrics", {}).get(name)) for a, b in shared]
        pairs = [(x, y) for x, y in pairs if isinstance(x, (int, float)) and isinstance(y, (int, float))]
        if pairs:
            change[name] = sum(x - y for x, y in pairs) / len(pairs)
    return Agreement(reference=reference_path, reference_run_id=reference.get("run_id"),
                     reference_exact=exact_mode(reference), samples=len(shared), identical=len(shared) - len(differing),
                     mean_first_difference=sum(differing) / len(differing) if differing else None,
                     unit=firsts[0][1] if firsts else "token", quality_change=change)


def agreement_with(doc: dict, records: list[dict], candidates: list[tuple[str, dict]]) -> Agreement | None:
    """The run's agreement with its matching autoregressive run among the candidates (None: no such run, or the
    run promises nothing)."""
    if not promises_autoregressive(doc):
        return None
    found = find_reference(doc, candidates)
    if found is None:
        return None
    path, reference = found
    ref_samples = samples_path(path, reference)
    if ref_samples is None:
        return None
    return agreement(records, path, reference, read_records(ref_samples))


def run_docs(paths: list[str]) -> list[tuple[str, dict]]:
    """(path, doc) of every complete run log under the paths (others are skipped, as analyze_logs skips them)."""
    found = []
    for path in iter_json_files(paths):
        try:
            found.append((path, read_run(path)))
        except Skip:
            continue
    return found


def engine_label(doc: dict) -> str:
    """How the run computed its steps: exact mode, graphs, compiled blocks, split."""
    parts = [f"{name}={_setting(doc, name).split(' ')[0]}" for name in ("exact", "cuda_graphs", "compile")]
    if doc["args"].get("device_map"):
        parts.append(f"device_map={doc['args']['device_map']}")
    return ",".join(parts)


AGREEMENT_COLUMNS = [*CONFIG, "dtype", "engine", "reference", "identical", "fraction_identical",
                     "mean_first_difference", "unit", "rougeL_change"]


def agreement_rows(paths: list[str]) -> list[dict]:
    """One row per run that promises autoregressive tokens and has a matching reference among the paths."""
    docs = run_docs(paths)
    rows = []
    for path, doc in docs:
        samples = samples_path(path, doc)
        found = agreement_with(doc, read_records(samples), docs) if samples else None
        if found is None:
            continue
        config = run_row(doc)
        rows.append({**{k: config[k] for k in CONFIG}, "dtype": doc["model"].get("dtype"),
                     "engine": engine_label(doc), "reference": found.reference_run_id,
                     "identical": f"{found.identical}/{found.samples}", "fraction_identical": found.fraction_identical,
                     "mean_first_difference": found.mean_first_difference, "unit": found.unit,
                     "rougeL_change": found.quality_change.get("rougeL")})
    return rows


def render_agreement(rows: list[dict], fmt: str) -> str:
    if fmt == "json":
        import json
        return json.dumps(rows, indent=1)
    if fmt == "csv":
        import pandas as pd
        return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS).to_csv(index=False)
    cells = [["" if r[c] is None else (f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]))
              for c in AGREEMENT_COLUMNS] for r in rows]
    return tabulate(cells, headers=AGREEMENT_COLUMNS, tablefmt={"github": "github", "latex": "latex"}[fmt])


def write_agreement_csv(rows: list[dict], out_dir: str) -> str:
    path = os.path.join(out_dir, "summary_agreement.csv")
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_agreement(rows, "csv"))
    return path
