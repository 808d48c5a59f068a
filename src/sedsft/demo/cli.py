"""``sedsft demo``: the paper's SFT -> GRPO -> evaluation comparison, end to end on a laptop CPU.

    sedsft demo                      # all five objectives, one seed (about 15 minutes on 2 cores)
    sedsft demo --quick              # CE vs SED-SFT on smaller budgets (about 4 minutes)
    sedsft demo --seeds 3            # mean +- std over seeds 0, 1, 2
    sedsft demo --objectives ce,sed  # a subset, on the default budgets

Writes ``<output_dir>/report.md`` and ``<output_dir>/results.json``; rerunning the same command skips
the stages already finished. Base models are cached under ``<cache_dir>/demo-base/<config hash>``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

from sedsft.errors import UserError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sedsft demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CE and SED-SFT on smaller budgets (~4 min)")
    p.add_argument("--seeds", type=int, default=1, help="seeds of the SFT/RL/eval stages (mean +- std)")
    p.add_argument("--output_dir", default="demo_out", help="where the report and every stage go")
    p.add_argument(
        "--cache_dir", default=None, help="base-model cache (default: $SEDSFT_CACHE or ~/.cache/sedsft)"
    )
    p.add_argument("--objectives", default=None, help="comma-separated subset of ce,gem,dft,sed_nomask,sed")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed its one-line usage error
        return int(e.code or 0)
    from sedsft.demo.config import DemoConfig

    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    cfg = DemoConfig.quick() if args.quick else DemoConfig.default()
    if args.objectives is not None:
        names = [o.strip() for o in args.objectives.split(",") if o.strip()]
        if not names:
            raise UserError("--objectives is empty; give e.g. --objectives ce,sed")
        cfg = cfg.with_objectives(names)

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
        progress=not args.no_progress,
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
