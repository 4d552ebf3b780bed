"""Step 1 of a benchmark run: read and check every flag and choose the samples, before torch is imported or any
model is loaded (the output folder is only checked here; it is created when the run starts)."""
from __future__ import annotations

from dataclasses import dataclass

from layerbench.evaluation import datasets
from layerbench.runs import lm_eval_step, resume
from layerbench.runs.arguments import Arguments, parse_args
from layerbench.runs.flag_checks import check_flags
from layerbench.runs.given_flags import check_resume_folder
from layerbench.runs.run_lock import RunLock, acquire
from layerbench.runs.ranks import DistInfo
from layerbench.surgery.config import PruneConfig


@dataclass
class Plan:
    args: Arguments
    info: DistInfo
    prune_config: PruneConfig
    resumed: resume.ResumeState | None
    output_dir: str
    options: datasets.DatasetOptions
    split: str
    samples: list[datasets.Sample]
    template: str
    shots: str  # n-shot prefix
    lock: RunLock | None = None  # --resume: the resumed run's lock, held by the main rank from planning on

    def prompt_text(self, sample: datasets.Sample) -> str:
        """The n-shot prefix and the filled template (before any chat wrapping)."""
        return self.shots + datasets.fill_template(self.template, sample.input)


def make_plan(argv: list[str] | None, info: DistInfo) -> Plan:
    args = parse_args(argv)
    b, d = args.benchmark, args.dataset
    prune_config = check_flags(args, info)
    lm_eval_step.check(b)
    resumed = resume.load(b.resume, args.as_dict()) if b.resume else None
    lock = None
    if resumed:
        check_resume_folder(args, resumed.output_dir)
        lock = acquire(resumed.output_dir, resumed.run_id, f"--resume {b.resume}") if info.is_main else None
    output_dir = resumed.output_dir if resumed else b.output_dir
    options = datasets.DatasetOptions(data_path=d.data_path, prompt_field=d.prompt_field,
                                      response_field=d.response_field)
    spec = datasets.get_spec(d.dataset)
    split, all_samples = datasets.load_split(d.dataset, d.split, options)
    samples = datasets.select_samples(all_samples, d.num_samples, b.seed, d.random_shuffle)
    template = d.template or spec.template
    shots = datasets.few_shot_prefix(d.dataset, d.n_shot, b.seed, template, options)
    return Plan(args=args, info=info, prune_config=prune_config, resumed=resumed, output_dir=output_dir,
                options=options, split=split, samples=samples, template=template, shots=shots, lock=lock)
