"""Seed B's example: low-rank factorization and gated layer skipping through the seed's own API
(`layer_compression.layer_compression_skipping.LayerCompressionAndSkipping`), measured before and after.

    ./run_layer_compression.sh --model gpt2 --rank 4 --threshold 0.4 --compute 0.3

Prints the generated text of one aclsum prompt before and after, `get_metrics()`, and a table of parameters,
bytes held (after: with the dense originals adjust_compression_level keeps), decoder-layer calls run while generating, decode speed and perplexity on a few aclsum references.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from layerbench.errors import OneLineArgumentParser, positive_int, run_script


def unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None,
                    help="local directory or hub id of a causal LM, e.g. gpt2 (default: the embedded SmolLM2-135M)")
    ap.add_argument("--rank", type=positive_int, default=8, help="rank r of the factorized cold-layer matrices")
    ap.add_argument("--threshold", type=unit_interval, default=0.3,
                    help="skip a cold layer whose measured temperature is below this")
    ap.add_argument("--compute", type=float, default=1.0,
                    help="available compute c in (0, 1] for adjust_compression_level (1: the settings above)")
    ap.add_argument("--hot_path", type=int, nargs="+", default=None,
                    help="layers never compressed or skipped (default: 0, 1 and the last)")
    ap.add_argument("--max_new_tokens", type=positive_int, default=32, help="tokens generated per measurement")
    ap.add_argument("--num_texts", type=positive_int, default=3, help="aclsum test references for perplexity")
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto")
    args = ap.parse_args(argv)
    if not 0 < args.compute <= 1:
        ap.error(f"argument --compute: must be in (0, 1], got {args.compute}")
    return args


@dataclass
class Measured:
    parameters: int
    bytes: int
    layers_run: str
    tokens_per_second: float
    perplexity: float
    text: str


def texts_and_prompt(tokenizer, num_texts: int) -> tuple[list[list[int]], list[int]]:
    """Token ids of the first `num_texts` aclsum test references, and the first test sample's prompt."""
    from layerbench.evaluation import datasets
    _, samples = datasets.load_split("aclsum_summarization", "test", datasets.DatasetOptions())
    spec = datasets.get_spec("aclsum_summarization")
    texts = [tokenizer(s.reference.strip())["input_ids"] for s in samples[:num_texts]]
    prompt = datasets.build_prompt(tokenizer, spec.template.format(input=samples[0].input),
                                   datasets.use_chat_template(tokenizer, "auto"))
    return texts, prompt


def measure(lcs, texts: list[list[int]], prompt: list[int], max_new_tokens: int) -> Measured:
    """Generate greedily through the engine (counting layer calls), then score the texts' perplexity."""
    import math

    import torch

    from layerbench.decoding import STRATEGIES, GenerationConfig
    from layerbench.decoding.sampling import SamplingConfig, StopCondition, TokenChooser
    from layerbench.engine.engine import Engine, EngineOptions
    from layerbench.evaluation.perplexity import reference_nll
    from layerbench.surgery.layers import count_parameters

    engine = lcs.attach(Engine(lcs.model, EngineOptions(linear_kernel="torch")))  # built after the surgery
    lcs.start_counting()
    result = STRATEGIES["autoregressive"].generate(
        engine, torch.tensor([prompt], device=engine.device), GenerationConfig(max_steps=max_new_tokens),
        TokenChooser(SamplingConfig()), StopCondition())  # no stop: every run times the same token count
    metrics = lcs.get_metrics()
    with lcs.counting_paused():
        scored = [reference_nll(engine, ids[:1], ids[1:]) for ids in texts]
    nll, tokens = sum(s["nll_sum"] for s in scored), sum(s["tokens"] for s in scored)
    run, total = metrics["layers_executed"], metrics["layers_executed"] + metrics["layers_skipped"]
    return Measured(count_parameters(lcs.model), lcs.num_bytes(), f"{run}/{total}",
                    len(result.token_ids) / result.total_time, math.exp(nll / tokens),
                    lcs.tokenizer.decode(result.token_ids, skip_special_tokens=True))


def run(args: argparse.Namespace) -> None:
    import torch
    from tabulate import tabulate

    from layer_compression.layer_compression_skipping import LayerCompressionAndSkipping
    from layerbench.models.loading import load_model

    loaded = load_model(args.model, dtype="float32", device=args.device)
    model, tokenizer = loaded.model, loaded.tokenizer
    texts, prompt = texts_and_prompt(tokenizer, args.num_texts)
    lcs = LayerCompressionAndSkipping(model, compression_rank=args.rank, hot_path_indices=args.hot_path,
                                      skip_threshold=args.threshold)
    lcs.tokenizer = tokenizer
    before = measure(lcs, texts, prompt, args.max_new_tokens)
    lcs.apply_low_rank_factorization()
    lcs.update_model_with_gating()
    adjusted = lcs.adjust_compression_level(available_compute=args.compute)
    with torch.no_grad():
        model(torch.tensor([prompt], device=model.device))  # the seed API: the first forward measures temperatures
    after = measure(lcs, texts, prompt, args.max_new_tokens)
    print(f"model: {loaded.name} ({lcs.num_layers} layers), rank {args.rank}, threshold {args.threshold}, "
          f"compute {args.compute} -> {adjusted}")
    print(f"before: {before.text!r}")
    print(f"after:  {after.text!r}")
    print("get_metrics():")
    for key, value in lcs.get_metrics().items():
        print(f"  {key}: {value}")
    rows = [("parameters", before.parameters, after.parameters), ("bytes held", before.bytes, after.bytes),
            ("layers run (generation)", before.layers_run, after.layers_run),
            ("tok/s", f"{before.tokens_per_second:.1f}", f"{after.tokens_per_second:.1f}"),
            (f"perplexity ({len(texts)} aclsum refs)", f"{before.perplexity:.2f}", f"{after.perplexity:.2f}")]
    print(tabulate(rows, headers=["", "before", "after"], tablefmt="github"))


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    run(args)
    return 0


if __name__ == "__main__":
    run_script(main)
