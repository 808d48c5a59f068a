"""``sedsft demo``: the paper's SFT -> GRPO -> evaluation comparison, end to end on a laptop CPU.

    sedsft demo                      # all five objectives, one seed (about 15 minutes on 2 cores)
    sedsft demo --quick              # CE vs SED-SFT on smaller budgets (about 4 minutes)
    sedsft demo --seeds 3            # mean +- std over seeds 0, 1, 2
    sedsft demo --objectives ce,sed  # a subset, on the default budgets

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

from sedsft.cli_parse import RunOptions, parse_command
from sedsft.errors import UserError, check_count


@dataclass
class DemoArgs:
    """Which preset of :class:`~sedsft.demo.config.DemoConfig` runs, how often, and where."""

    quick: bool = field(default=False, metadata={"help": "CE and SED-SFT on smaller budgets (~4 min)"})
    seeds: int = field(default=1, metadata={"help": "seeds of the SFT/RL/eval stages (mean +- std)"})
    output_dir: str = field(default="demo_out", metadata={"help": "where the report and every stage go"})
    cache_dir: str | None = field(
        default=None, metadata={"help": "base-model cache (default: $SEDSFT_CACHE or ~/.cache/sedsft)"}
    )
    objectives: str | None = field(
        default=None, metadata={"help": "comma-separated subset of ce,gem,dft,sed_nomask,sed"}
    )
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: all cores)"})
    progress: bool = field(default=True, metadata={"help": "progress bars"})

    def __post_init__(self):
        check_count("seeds", self.seeds)
        check_count("threads", self.threads, allow_none=True)
        if self.objectives is not None and not [o for o in self.objectives.split(",") if o.strip()]:
            raise UserError("--objectives is empty; give e.g. --objectives ce,sed")


def main(argv: list[str] | None = None) -> int:
    args, run_options = parse_command(
        "demo",
        sys.argv[1:] if argv is None else argv,
        DemoArgs,
        RunOptions,
        description=__doc__.split("\n\n")[0],
    )
    from sedsft.demo.config import DemoConfig

    cfg = DemoConfig.quick() if args.quick else DemoConfig.default()
    if args.objectives is not None:
        cfg = cfg.with_objectives([o.strip() for o in args.objectives.split(",") if o.strip()])

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # child processes (grading workers) stay single-threaded
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
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
        seeds=args.seeds,
        progress=args.progress,
        overwrite=run_options.overwrite,
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


if __name__ == "__main__":
    sys.exit(main())
