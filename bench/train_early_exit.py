"""Training for early exit on the embedded model: the stock model, plain fine-tuning (the control) and LayerSkip's
recipe (and, as ablations, layer dropout alone and the early-exit loss alone), each trained by train.py on the
aclsum train split with the same data order, steps, optimizer and seed, then measured the same way: perplexity of
held-out aclsum test references at the last layer and at exits L/4, L/2, 3L/4; a `sweep_exit` grid of
self-speculative decoding against autoregressive decoding (acceptance, tokens/s, best cell); ROUGE-L through
benchmark.py as it is, with random dropout p=0.2 and with angular n=6; lm-eval on tasks/. One JSON under
results/train/; the trained checkpoints stay in --work_dir.

    .venv/bin/python -m bench train_early_exit [--arms stock control layerskip] [--steps 25] [--reuse_checkpoints]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from doc_tables import Section, table  # noqa: E402
from layerbench.errors import OneLineArgumentParser, UsageError, positive_int, run_script  # noqa: E402
from runner import write_result  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STOCK = "stock"
# arm -> its own train.py flags (None: not trained); exits: the early-exit loss's exits (L/4, L/2, 3L/4)
ARMS = {
    STOCK: lambda a, exits: None,
    "control": lambda a, exits: [],
    "layerskip": lambda a, exits: [*dropout_flags(a), *exit_loss_flags(a, exits)],
    "layer_dropout": lambda a, exits: dropout_flags(a),
    "early_exit_loss": lambda a, exits: exit_loss_flags(a, exits),
}


def dropout_flags(a: argparse.Namespace) -> list[str]:
    return ["--layer_dropout_max", str(a.layer_dropout_max)]


def exit_loss_flags(a: argparse.Namespace, exits: list[int]) -> list[str]:
    return ["--early_exit_loss_scale", str(a.early_exit_loss_scale), "--early_exit_layers", *map(str, exits)]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    train = ap.add_argument_group("training (every arm the same, apart from its recipe)")
    train.add_argument("--model", default=None, help="model folder (default: the embedded SmolLM2-135M-Instruct)")
    train.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS), help="arms, in this order")
    train.add_argument("--steps", type=positive_int, default=25, help="optimizer steps (default: 25)")
    train.add_argument("--batch_size", type=positive_int, default=1, help="examples per micro-batch (default: 1)")
    train.add_argument("--accumulation", type=positive_int, default=4, help="micro-batches per step (default: 4)")
    train.add_argument("--learning_rate", type=float, default=1e-4, help="AdamW learning rate (default: 1e-4)")
    train.add_argument("--warmup_steps", type=int, default=2, help="linear warm-up steps (default: 2)")
    train.add_argument("--precision", choices=["fp32", "bf16"], default="bf16", help="(default: bf16)")
    train.add_argument("--layer_dropout_max", type=float, default=0.1, help="p_max of the recipe (default: 0.1)")
    train.add_argument("--early_exit_loss_scale", type=float, default=1.0, help="e_scale (default: 1.0)")
    train.add_argument("--work_dir", default=os.path.join(os.path.expanduser("~"), ".cache", "layerbench",
                                                          "train_early_exit"), help="checkpoints and run logs")
    train.add_argument("--reuse_measurements", default=None, metavar="FILE",
                       help="take the arms FILE (an earlier result) holds from it instead of training and measuring "
                            "them again; refused unless FILE was made with the same training and measurement flags")
    train.add_argument("--reuse_checkpoints", action="store_true",
                       help="keep an arm's checkpoint in --work_dir when its training log is complete and its "
                            "command is the same (re-measuring without retraining)")
    ev = ap.add_argument_group("measurements")
    ev.add_argument("--perplexity_references", type=positive_int, default=50, help="aclsum test references")
    ev.add_argument("--speculations", type=positive_int, nargs="+", default=[1, 2, 3], help="sweep: draft lengths")
    ev.add_argument("--sweep_samples", type=positive_int, default=3, help="sweep: prompts")
    ev.add_argument("--sweep_tokens", type=positive_int, default=48, help="sweep: tokens per prompt")
    ev.add_argument("--sweep_rounds", type=positive_int, default=1, help="sweep: timed rounds")
    ev.add_argument("--draft_vocabulary", type=positive_int, default=2048,
                    help="speed check: the draft head's vocabulary (default: 2048)")
    ev.add_argument("--speed_rounds", type=positive_int, default=2, help="speed check: timed rounds (default: 2)")
    ev.add_argument("--rouge_samples", type=positive_int, default=10, help="ROUGE-L: aclsum test samples")
    ev.add_argument("--rouge_tokens", type=positive_int, default=64, help="ROUGE-L: tokens generated at most")
    ev.add_argument("--lm_eval_limits", default="aclsum_mc=40,aclsum_ppl=40,aclsum_summarize=5",
                    help="lm-eval documents per task (task=N,...)")
    ev.add_argument("--out", default=os.path.join("results", "train"), help="folder of the result JSON")
    return ap.parse_args(argv)


def train_arm(a: argparse.Namespace, name: str, flags: list[str]) -> dict:
    """Train one arm with train.py (a subprocess, its output in the work folder); returns its log's summary."""
    folder = os.path.join(a.work_dir, name)
    command = ["train.py", *(["--model", a.model] if a.model else []), "--output_dir", folder, "--max_train_steps", str(a.steps), "--batch_size",
               str(a.batch_size), "--gradient_accumulation_steps", str(a.accumulation), "--learning_rate",
               str(a.learning_rate), "--warmup_steps", str(a.warmup_steps), "--precision", a.precision, *flags]
    log_path = os.path.join(folder, "training_log.json")
    if a.reuse_checkpoints and os.path.isfile(log_path):
        with open(log_path) as f:
            doc = json.load(f)
        if doc.get("complete") and doc.get("command") == command:
            return summary(doc, reused=True)
    if os.path.isdir(folder):
        import shutil
        shutil.rmtree(folder)
    os.makedirs(a.work_dir, exist_ok=True)
    with open(os.path.join(a.work_dir, f"{name}.train.log"), "w") as out:
        proc = subprocess.run([sys.executable, *command, "--progress", "False"], cwd=ROOT, stdout=out,
                              stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"training arm {name} failed; see {out.name}")
    with open(log_path) as f:
        return summary(json.load(f), reused=False)


def summary(doc: dict, reused: bool) -> dict:
    """The training log's parts the result keeps: command, recipe, data, totals, and the loss curve."""
    return {"command": "python " + shlex.join(doc["command"]), "reused": reused, "recipe": doc["recipe"],
            "data": doc["data"], "final": doc["final"],
            "curve": [{k: s[k] for k in ("step", "loss", "exit_losses", "skipped_layer_rows")} for s in doc["steps"]]}


def measure_arm(a: argparse.Namespace, name: str, model_dir: str | None, exits: list[int], num_layers: int) -> dict:
    import train_early_exit_runs as runs
    folder = os.path.join(a.work_dir, f"{name}_measurements")
    seconds: dict[str, float] = {}
    limits = {t: int(n) for t, n in (item.split("=") for item in a.lm_eval_limits.split(","))}
    result = {
        "perplexity": runs.timed(seconds, "perplexity", runs.exit_perplexities, model_dir, exits,
                                 a.perplexity_references),
        "sweep": runs.timed(seconds, "sweep", runs.sweep, model_dir, os.path.join(folder, "sweep"), exits,
                            a.speculations, a.sweep_samples, a.sweep_tokens, a.sweep_rounds),
        "speed": None,
        "rouge": runs.timed(seconds, "rouge", runs.pruned_rouge, model_dir, os.path.join(folder, "rouge"),
                            a.rouge_samples, a.rouge_tokens, num_layers),
        "lm_eval": runs.timed(seconds, "lm_eval", runs.lm_eval_scores, model_dir, limits),
    }
    result["speed"] = runs.timed(seconds, "speed", runs.speed_check, model_dir, result["sweep"]["rows"],
                                 a.draft_vocabulary, a.sweep_samples, a.sweep_tokens, a.speed_rounds)
    return {**result, "seconds": seconds}


# flags an arm's numbers depend on: a result file's arms are reused only when all of them are the same
SAME_FOR_REUSE = ("model", "steps", "batch_size", "accumulation", "learning_rate", "warmup_steps", "precision",
                  "layer_dropout_max", "early_exit_loss_scale", "perplexity_references", "speculations",
                  "sweep_samples", "sweep_tokens", "sweep_rounds", "draft_vocabulary", "speed_rounds", "rouge_samples",
                  "rouge_tokens", "lm_eval_limits")


def earlier_arms(a: argparse.Namespace) -> dict:
    """The arms of --reuse_measurements FILE (each marked with the file it was measured in), after checking that
    the file was made with the same training and measurement flags."""
    if not a.reuse_measurements:
        return {}
    with open(a.reuse_measurements) as f:
        doc = json.load(f)
    differing = [k for k in SAME_FOR_REUSE if doc["args"].get(k) != getattr(a, k)]
    if differing:
        raise UsageError(f"--reuse_measurements {a.reuse_measurements}: made with other flags: --{differing[0]} "
                         f"({doc['args'].get(differing[0])!r}, here {getattr(a, differing[0])!r})")
    name = os.path.basename(a.reuse_measurements)
    return {arm: {**values, "measured_in": values.get("measured_in", name)} for arm, values in doc["arms"].items()}


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    from layerbench.models.loading import embedded_model_source
    with open(os.path.join(a.model or embedded_model_source()[0], "config.json")) as f:
        num_layers = json.load(f)["num_hidden_layers"]
    exits = [num_layers // 4, num_layers // 2, 3 * num_layers // 4]
    started, arms, earlier = time.perf_counter(), {}, earlier_arms(a)
    for name in a.arms:
        if name in earlier:
            arms[name] = earlier[name]
            continue
        flags = ARMS[name](a, exits)
        arm_started = time.perf_counter()
        trained = None if flags is None else train_arm(a, name, flags)
        model_dir = a.model if flags is None else os.path.join(a.work_dir, name)
        arms[name] = {"training": trained, **measure_arm(a, name, model_dir, exits, num_layers),
                      "arm_seconds": time.perf_counter() - arm_started}
        print(f"arm {name} done in {arms[name]['arm_seconds']:.0f} s", file=sys.stderr)
    doc = {"what": __doc__.split("\n\n")[0].replace("\n", " "),
           "command": "python -m bench train_early_exit " + shlex.join(argv if argv is not None else sys.argv[1:]),
           "args": vars(a), "model": a.model or "SmolLM2-135M-Instruct (embedded)", "num_layers": num_layers, "exits": exits,
           "arms": arms, "seconds": time.perf_counter() - started,
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    write_result(a.out, "train_early_exit", doc)
    print(json.dumps(goals(arms, num_layers), indent=1))
    return 0


def _acceptance(arm: dict, exit_layer: int) -> dict[int, float]:
    return {r["num_speculations"]: r["acceptance"] for r in arm["sweep"]["rows"]
            if r["exit_layer"] == exit_layer and r["draft_confidence"] is None}


def _rouge_loss(arm: dict, variant: str) -> float:
    return arm["rouge"]["full model"]["rougeL"] - arm["rouge"][variant]["rougeL"]


def goals(arms: dict, num_layers: int) -> dict:
    """The issue's targets, each with its value and whether it is met (None where an arm is missing)."""
    out: dict = {}
    recipe, stock, control = arms.get("layerskip"), arms.get(STOCK), arms.get("control")
    if recipe and stock:
        ours, base = _acceptance(recipe, num_layers // 2), _acceptance(stock, num_layers // 2)
        ratios = {d: ours[d] / base[d] if base[d] else float("inf") for d in ours}
        possible = [d for d in ratios if 10 * base[d] <= 1]  # acceptance cannot exceed 1
        out["acceptance_at_half_depth_vs_stock"] = {
            "target": ">= 10x at every d where 10x the stock's is <= 1", "acceptance": ours, "stock": base,
            "ratio": ratios, "met": bool(possible) and all(ratios[d] >= 10 for d in possible)}
    if recipe:
        best = recipe["sweep"]["best"]
        out["self_speculative_over_autoregressive_sweep"] = {
            "target": ">= 1.3 at the sweep's best cell", "value": best["speedup"],
            "cell": f"E={best['exit_layer']} d={best['num_speculations']}", "met": best["speedup"] >= 1.3}
        checked = recipe["speed"]["best"]
        out["self_speculative_over_autoregressive_speed_check"] = {
            "target": ">= 1.3, best run of the speed check", "value": checked["speedup"], "cell": checked["run"],
            "met": checked["speedup"] >= 1.3}
    if recipe and control:
        ratio = recipe["perplexity"]["final"] / control["perplexity"]["final"]
        out["final_perplexity_vs_control"] = {"target": "<= 1.10", "value": ratio, "met": ratio <= 1.10}
    for name in ("layerskip", "layer_dropout"):
        if name in arms and control:
            ours, theirs = _rouge_loss(arms[name], "random p=0.2"), _rouge_loss(control, "random p=0.2")
            out[f"random_dropout_rouge_loss_{name}_vs_control"] = {
                "target": "smaller ROUGE-L loss than the control's", "value": ours, "control": theirs,
                "met": ours < theirs}
    return out


def _arm_rows(doc: dict) -> list[list]:
    rows = []
    for name, arm in doc["arms"].items():
        t, p = arm["training"], arm["perplexity"]
        last = t["final"]["mean_exit_losses"].get(str(doc["num_layers"])) if t else None
        rows.append([name, "-" if t is None else f"{t['final']['seconds']:.0f}",
                     "-" if last is None else f"{last:.3f}", f"{p['final']:.2f}",
                     *(f"{p['exits'][str(e)]:.4g}" for e in doc["exits"])])
    return rows


def _speculation_rows(doc: dict) -> list[list]:
    half = doc["num_layers"] // 2
    rows = []
    for name, arm in doc["arms"].items():
        s, best = arm["sweep"], arm["sweep"]["best"]
        accepted = _acceptance(arm, half)
        rows.append([name, f"{s['autoregressive_tokens_per_second']:.1f}",
                     *(f"{accepted[d]:.3f}" for d in sorted(accepted)),
                     f"E={best['exit_layer']} d={best['num_speculations']}", f"{best['speedup']:.3f}",
                     f"{best['acceptance']:.3f}", s["all_greedy_equal"]])
    return rows


def _speed_rows(doc: dict) -> list[list]:
    rows = []
    for name, arm in doc["arms"].items():
        runs = arm["speed"]["rows"][1:]
        full = max((r for r in runs if r["run"].endswith("full head")), key=lambda r: r["speedup"])
        trimmed = max((r for r in runs if not r["run"].endswith("full head")), key=lambda r: r["speedup"])
        rows.append([name, f"{arm['speed']['rows'][0]['tokens_per_second']:.1f}",
                     *(x for r in (full, trimmed) for x in (r["run"], f"{r['speedup']:.3f}", f"{r['acceptance']:.3f}")),
                     all(r["greedy_equal_to_autoregressive"] for r in runs)])
    return rows


def _rouge_rows(doc: dict) -> tuple[list[list], list[str]]:
    variants = list(next(iter(doc["arms"].values()))["rouge"])  # the full model first
    rows = []
    for name, arm in doc["arms"].items():
        r = arm["rouge"]
        rows.append([name, f"{r[variants[0]]['rougeL']:.4f}",
                     *(f"{r[v]['rougeL']:.4f} ({r[v]['rougeL'] - r[variants[0]]['rougeL']:+.4f})"
                       for v in variants[1:]), *(f"{r[v]['perplexity']:.2f}" for v in variants)])
    return rows, ["arm", "ROUGE-L", *variants[1:], "ppl", *(f"ppl {v}" for v in variants[1:])]


def _lm_eval_rows(doc: dict) -> tuple[list[list], list[str]]:
    first = next(iter(doc["arms"].values()))["lm_eval"]
    columns = [(task, metric) for task, entry in first.items() for metric in entry["metrics"]]
    rows = [[name, *(f"{arm['lm_eval'][t]['metrics'][m]['value']:.4g}" for t, m in columns)]
            for name, arm in doc["arms"].items()]
    return rows, [f"{t} {m}" for t, m in columns]


def _goal_rows(doc: dict) -> list[list]:
    """The goals, computed from the measurements (not stored in the result)."""
    rows = []
    for name, g in goals(doc["arms"], doc["num_layers"]).items():
        value = g.get("value", g.get("ratio"))
        shown = ", ".join(f"d={d}: {v:.3g}" for d, v in value.items()) if isinstance(value, dict) else f"{value:.4g}"
        rows.append([name, g["target"], shown + (f" (control {g['control']:.4g})" if "control" in g else ""),
                     "yes" if g["met"] else "no"])
    return rows


def _environment_prefix(doc: dict) -> str:
    """The OpenMP wait policy the run had (PASSIVE keeps waiting threads from spinning on a shared CPU)."""
    return f"OMP_WAIT_POLICY={doc['omp_wait_policy']} " if doc.get("omp_wait_policy") else ""


def _reused_note(doc: dict) -> str:
    reused = {}
    for name, arm in doc["arms"].items():
        if "measured_in" in arm:
            reused.setdefault(arm["measured_in"], []).append(name)
    return "".join(f" Arms {', '.join(names)}: trained and measured by the run of `{source}` (same flags), taken "
                   "from it." for source, names in reused.items())


def render(files: list[tuple[str, dict]]) -> str:
    out = []
    for path, doc in files:
        half, args = doc["num_layers"] // 2, doc["args"]
        trained = next((arm["training"] for arm in doc["arms"].values() if arm["training"]), None)
        recipe = (f"{args['steps']} steps x {args['batch_size'] * args['accumulation']} examples, lr "
                  f"{args['learning_rate']}, {args['precision']}, p_max {args['layer_dropout_max']}, e_scale "
                  f"{args['early_exit_loss_scale']}, exits {doc['exits']}")
        commands = "\n".join(f"- {name}: `{arm['training']['command']}`" for name, arm in doc["arms"].items()
                             if arm["training"])
        spec_head = ["arm", "AR tok/s", *(f"acceptance E={half} d={d}" for d in sorted(args["speculations"])), "best cell",
                     "best SS/AR", "best acceptance", "greedy equal"]
        lm_rows, lm_head = _lm_eval_rows(doc)
        out.append(
            f"`{os.path.basename(path)}` ({doc['model']}, {doc['num_layers']} layers; {recipe}; data "
            f"{trained['data']['examples'] if trained else '?'} aclsum train examples; {doc['seconds'] / 60:.0f} min "
            f"for this run). Command: `{_environment_prefix(doc)}{doc['command']}`.{_reused_note(doc)} Training "
            f"commands:\n{commands}\n\n"
            "Training and perplexity of held-out aclsum test references (teacher-forced, given the prompt) at the "
            "last layer and at each exit:\n\n"
            + table(_arm_rows(doc), ["arm", "train s", "final CE (last 10 steps)", "ppl last layer",
                                     *(f"ppl exit {e}" for e in doc["exits"])], floatfmt=".4g") + "\n\n"
            "Self-speculative decoding (`sweep_exit` grid, one process per arm, alternated with autoregressive):\n\n"
            + table(_speculation_rows(doc), spec_head) + "\n\nSpeed check: autoregressive against self-speculative "
            "decoding at each exit's best d of the sweep, with the full LM head and with a draft head over the "
            f"{args['draft_vocabulary']} most frequent aclsum train tokens (`--draft_vocabulary`), alternated in one "
            "process:\n\n" + table(_speed_rows(doc), ["arm", "AR tok/s", "best (full head)", "SS/AR", "acceptance",
                                                     "best (draft vocabulary)", "SS/AR", "acceptance",
                                                     "greedy equal"]) + "\n\nROUGE-L (benchmark.py, greedy) of the model as it is "
            "and pruned, change in brackets; reference perplexity of each:\n\n"
            + table(*_rouge_rows(doc)) + "\n\nlm-eval (offline tasks, limits "
            f"{args['lm_eval_limits']}):\n\n" + table(lm_rows, ["arm", *lm_head]) + "\n\nGoals of issue 28:\n\n"
            + table(_goal_rows(doc), ["goal", "target", "measured", "met"]))
    return "\n\n".join(out)


SECTION = Section("Training for early exit: stock, control and LayerSkip (bench/train_early_exit.py)",
                  "train/train_early_exit_*.json", "python -m bench train_early_exit",
                  "Each arm trained by train.py on the aclsum train split (same data order, steps, optimizer, seed; "
                  "only the recipe differs) and measured the same way. The sweep's speeds are from one process per "
                  "arm on the shared 2-core CPU: compare an arm's self-speculative and autoregressive speeds (measured "
                  "side by side), not speeds across arms.", render)


if __name__ == "__main__":
    run_script(main)
