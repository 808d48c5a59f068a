"""``sedsft demo``: the paper's SFT -> GRPO -> evaluation comparison, end to end on a laptop CPU.

    sedsft demo                          # every objective + SED-SFT at lambda 2 and 4, 3 seeds
    sedsft demo --quick                  # CE vs SED-SFT, one seed, smaller evaluation
    sedsft demo --objectives ce,sed --sed_lambdas 1,4 --seeds 2
    sedsft demo --rebuild_base           # retrain the base model instead of using the packaged one

Writes ``<output_dir>/report.md`` and ``<output_dir>/results.json``; rerunning the same command skips
the stages already finished. ``--output_dir`` is a run folder (:mod:`sedsft.runs`): a demo with other
budgets there is refused unless ``--overwrite``. Base models are cached under
``<cache_dir>/demo-base/<config hash>``.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass, field

from sedsft.cores import cap_workers, usable_cores
from sedsft.errors import UserError, check_count


def _names(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _lambdas(text: str | None) -> tuple[float, ...] | None:
    names = _names(text)
    if names is None or text.strip().lower() == "none":
        return None if names is None else ()
    try:
        return tuple(float(x) for x in names)
    except ValueError:
        raise UserError(
            f"--sed_lambdas takes comma-separated numbers such as 1,2,4 (or none), got {text!r}"
        ) from None


@dataclass
class DemoArgs:
    """The options of ``sedsft demo``: a preset, the rows and seeds it runs, and where it writes."""

    quick: bool = field(default=False, metadata={"help": "CE and SED-SFT, one seed, smaller evaluation"})
    objectives: str | None = field(
        default=None, metadata={"help": "comma-separated registry objectives (default: the preset's)"}
    )
    sed_lambdas: str | None = field(
        default=None,
        metadata={"help": "lambda ablation: a SED-SFT row per value, e.g. 1,2,4; 'none' for no ablation"},
    )
    seeds: int | None = field(default=None, metadata={"help": "seeds 0..N-1 (default: 3, quick 1)"})
    output_dir: str = field(
        default="demo_out", metadata={"help": "where the report and every stage go", "manifest": False}
    )
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "base-model cache (default: $SEDSFT_CACHE or ~/.cache/sedsft)", "manifest": False},
    )
    rebuild_base: bool = field(
        default=False, metadata={"help": "retrain the base model (minutes) instead of the packaged one"}
    )
    jobs: int | None = field(
        default=None,
        metadata={
            "help": "stages run at once, one process each (default: the CPU cores, at most 8; more than the "
            "cores are capped)",
            "manifest": False,
        },
    )
    threads: int = field(
        default=1,
        metadata={
            "help": "torch threads per stage (a model this small gains little from more, and a busy machine "
            "makes extra threads much slower)",
            "manifest": False,
        },
    )
    progress: bool = field(default=True, metadata={"help": "progress bars", "manifest": False})

    def __post_init__(self):
        for name in ("seeds", "jobs"):  # unset: the preset's seeds, one job per core
            if getattr(self, name) is not None:
                check_count(name, getattr(self, name))
        if self.jobs is not None:
            self.jobs = cap_workers("--jobs", self.jobs)
        check_count("threads", self.threads)
        if self.objectives is not None and not _names(self.objectives):
            raise UserError("--objectives is empty; give e.g. --objectives ce,sed")

    def config(self):
        from sedsft.demo.config import DemoConfig

        cfg = DemoConfig.quick() if self.quick else DemoConfig.default()
        return cfg.with_rows(
            objectives=_names(self.objectives), sed_lambdas=_lambdas(self.sed_lambdas), seeds=self.seeds
        )


def main(argv: list[str] | None = None) -> int:
    from sedsft.cli_parse import RunOptions, parse_command

    argv = sys.argv[1:] if argv is None else argv
    args, run = parse_command("demo", argv, DemoArgs, RunOptions, description=__doc__.split("\n\n")[0])
    cfg = args.config()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # child processes (grading workers) stay single-threaded
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    # transformers' own deprecation notices about its internals (nothing the user can change)
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # weight loading bars; the demo shows its own

    from sedsft.demo.pipeline import run_demo

    start = time.perf_counter()
    result = run_demo(
        cfg,
        output_dir=args.output_dir,
        cache_dir=args.cache_dir,
        progress=args.progress,
        rebuild_base=args.rebuild_base,
        overwrite=run.overwrite,
        wait=run.wait,
        jobs=args.jobs or min(usable_cores(), 8),
        threads=args.threads,
    )
    print()
    print(result.table)
    print()
    print(
        f"{len(result.computed)} stages run, {len(result.reused)} read back, {time.perf_counter() - start:.0f} s."
    )
    print(f"report: {result.report_path}")
    print(f"results: {result.results_path}")
    return 0
