"""Which draft confidence (and draft vocabulary) makes self-speculative decoding with an exit adapter fastest: for
each setting, tokens/s relative to autoregressive decoding, acceptance and mean draft length, all runs alternated
in ONE process on the same prompts (the adapter and the vocabulary come from the train split).

    .venv/bin/python bench/draft_confidence.py --exit_layer 20 --num_speculations 4 --confidences 0.4 0.6 \
        --vocabularies 0 4096
"""
from __future__ import annotations

import argparse
import os

from doc_tables import Section, table
from layerbench.errors import OneLineArgumentParser, UsageError, non_negative_int, run_script
from runner import add_side_by_side_flags, load_prompts, our_runner, pruned_copy, run_alternating, write_result


def parse() -> argparse.Namespace:
    ap = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    groups = add_side_by_side_flags(ap, samples=3, max_tokens=48)
    spec = groups["self-speculation"]
    spec.add_argument("--confidences", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
                      help="draft confidences to try (default: 0.1 to 0.7 in steps of 0.1)")
    spec.add_argument("--vocabularies", type=non_negative_int, nargs="+", default=[0],
                      help="draft vocabulary sizes to try (0: the full vocabulary; default: 0)")
    groups["output"].add_argument("--out", default="results/cpu", help="folder for the JSON (default: results/cpu)")
    return ap.parse_args()


DRAFT_CONFIDENCE_COLUMNS = ["run", "tokens/s vs autoregressive", "acceptance", "mean draft length",
                            "same tokens as autoregressive"]


def adapter_runners(adapted, tokenizer, calibration: list[list[int]], a: argparse.Namespace
                    ) -> tuple[dict, dict, object]:
    """Self-speculation with the adapter, per draft vocabulary and confidence; the vocabularies' reports."""
    from layerbench.decoding import GenerationConfig
    from layerbench.engine.engine import Engine
    from layerbench.surgery.config import PruneConfig
    from layerbench.surgery.draft_vocabulary import choose_draft_vocabulary, install_draft_vocabulary
    runners, vocabularies, engine = {}, {}, None
    for size in a.vocabularies:
        variant, _ = pruned_copy(adapted.model, tokenizer, PruneConfig(method="base"), calibration, a.dataset)
        if size:
            vocabularies[size] = install_draft_vocabulary(
                variant, choose_draft_vocabulary(variant, size, {tokenizer.eos_token_id}))
        engine = Engine(variant.model)
        tag = f" vocabulary={size}" if size else ""
        for c in (None, *a.confidences):
            runners[f"self_speculative adapter{tag}" + (f" c={c}" if c else "")] = our_runner(
                engine, "self_speculative", GenerationConfig(max_steps=a.max_tokens, exit_block=a.exit_layer,
                                                             num_speculations=a.num_speculations, draft_confidence=c))
    return runners, vocabularies, engine


def main() -> None:
    a = parse()
    if any(not 0 < c < 1 for c in a.confidences):
        raise UsageError(f"--confidences must lie in (0, 1), got {a.confidences}")
    from tabulate import tabulate
    from layerbench.decoding import GenerationConfig
    from layerbench.engine.engine import Engine
    from layerbench.models.loading import load_model
    from layerbench.surgery.config import PruneConfig
    from layerbench.surgery.exit_adapter import fit_exit_adapter, install_exit_adapter
    loaded = load_model(a.model, a.dtype, a.device)
    prompts, calibration = load_prompts(a, loaded.tokenizer)
    adapted, _ = pruned_copy(loaded.model, loaded.tokenizer, PruneConfig(method="base"), calibration, a.dataset)
    adapter = install_exit_adapter(adapted, fit_exit_adapter(adapted, a.exit_layer))
    base = Engine(loaded.model)
    T, E, d = a.max_tokens, a.exit_layer, a.num_speculations
    runners = {"autoregressive": our_runner(base, "autoregressive", GenerationConfig(max_steps=T)),
               "self_speculative (no adapter)": our_runner(
                   base, "self_speculative", GenerationConfig(max_steps=T, exit_block=E, num_speculations=d))}
    more, vocabularies, engine = adapter_runners(adapted, loaded.tokenizer, calibration, a)
    stats, outputs = run_alternating({**runners, **more}, prompts, a.rounds)
    ar = stats["autoregressive"].tokens_per_second
    rows = [[name, s.tokens_per_second / ar, s.acceptance if s.drafted else None,
             s.mean_draft_length if s.rounds else None, outputs[name] == outputs["autoregressive"]]
            for name, s in stats.items()]
    print(tabulate(rows, DRAFT_CONFIDENCE_COLUMNS, tablefmt="github", floatfmt=".3f"))
    write_result(a.out, "draft_confidence", {
        "args": vars(a), "model": loaded.name, "exit_adapter": adapter, "draft_vocabularies": vocabularies,
        "rows": rows, "stats": {n: vars(s) for n, s in stats.items()}}, engine.device)


def render(files: list[tuple[str, dict]]) -> str:
    return "\n\n".join(f"`{os.path.basename(p)}`, exit adapter fit: relative error "
                       f"{d['exit_adapter']['relative_error_before']:.3f} -> "
                       f"{d['exit_adapter']['relative_error_after']:.3f} in {d['exit_adapter']['fit_seconds']:.1f} s:"
                       f"\n\n" + table(d["rows"], DRAFT_CONFIDENCE_COLUMNS) for p, d in files)


SECTION = Section("Adaptive draft length and draft vocabulary (bench/draft_confidence.py)",
                  "cpu/draft_confidence_*.json",
                  "python bench/draft_confidence.py  (the second file: --confidences 0.5 0.6 0.7 --vocabularies 0 2048 8192)",
                  "Self-speculative decoding at E=20, d=4 with a fitted exit adapter, against autoregressive decoding in "
                  "the same process.", render)


if __name__ == "__main__":
    run_script(main)
