"""``sedsft sweep``: run a pipeline over a grid of masking ratios r, top-k and lambda, resumably (Table 3).

    sedsft sweep --pipeline demo --grid r=0.5,0.7,0.9 k=2,3 --output_dir runs/sweep
    sedsft sweep --pipeline demo --grid lam=1,2,4 --output_dir runs/lam    # r, k at the paper's 0.7, 2
    sedsft sweep --pipeline mypkg.experiments:run_point --mask_ratios 0.5,0.7 --top_ks 2,3,5 --output_dir out

The pipeline is a function ``(mask_ratio: float, top_k: int) -> dict[str, float]``, with a third
argument ``lam`` when the grid sets ``lam=``; when it accepts an ``output_dir`` keyword it also gets a
folder of its own per point (``output_dir/points/r0.7_k2``, ``.../r0.7_k2_lam4``).
``--pipeline demo`` is the demo's ``sedsft.demo.pipeline:sweep_point``; ``module:function`` is imported
with importlib (the current folder is importable, as with ``python -m``), never evaluated as code.
Rerun the same command to resume: finished points are read back from ``sweep_points.jsonl`` (a grid
may grow between runs; the points already run are reused). The folder is a run folder
(:mod:`sedsft.runs`) whose manifest names the pipeline: another pipeline there is refused unless
``--overwrite``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sedsft.calibrate import DEFAULT_MASK_RATIO
from sedsft.cli_parse import RunOptions, parse_command
from sedsft.errors import UserError
from sedsft.losses.objectives import DEFAULT_TOP_K

from .sweep import grid, run_sweep

DEMO_PIPELINE = "sedsft.demo.pipeline:sweep_point"
_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def _numbers(text: str, kind, what: str) -> list:
    try:
        values = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(
            f"{what} must be comma-separated {kind.__name__}s such as {'0.5,0.7' if kind is float else '2,3'}, got {text!r}"
        ) from None
    if not values:
        raise UserError(f"{what} is empty")
    return values


# the value an axis takes when --grid leaves it out: the paper's r and k
GRID_DEFAULTS = {"r": DEFAULT_MASK_RATIO, "k": DEFAULT_TOP_K}


def parse_grid(items: list[str]) -> tuple[list[float], list[int], list[float] | None]:
    """``["r=0.5,0.7", "k=2,3", "lam=1,2"]`` -> ([0.5, 0.7], [2, 3], [1.0, 2.0]); r and k default to the
    paper's 0.7 and 2 when left out, lambda to None (the pipeline's own default)."""
    found: dict[str, str] = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip()
        if not sep or name not in ("r", "k", "lam"):
            raise UserError(
                f"--grid takes r=..., k=... and lam=... (e.g. --grid r=0.5,0.7,0.9 k=2,3 lam=1,2,4), got {item!r}"
            )
        if name in found:
            raise UserError(f"--grid gives {name}= twice; give each axis once")
        found[name] = values
    rs = _numbers(found["r"], float, "r") if "r" in found else [GRID_DEFAULTS["r"]]
    ks = _numbers(found["k"], int, "k") if "k" in found else [GRID_DEFAULTS["k"]]
    lams = _numbers(found["lam"], float, "lam") if "lam" in found else None
    return rs, ks, lams


def load_pipeline(spec: str) -> Callable:
    """The function named by ``demo`` or ``module:function``, imported (never evaluated)."""
    target = DEMO_PIPELINE if spec == "demo" else spec
    if not _SPEC.match(target):
        raise UserError(
            f"--pipeline must be 'demo' or 'module:function' (e.g. mypkg.runs:run_point), got {spec!r}"
        )
    module_name, func_name = target.split(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # user modules next to the command, as `python -m` allows
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and module_name.startswith(e.name):  # the module itself, not one of its imports
            if spec == "demo":
                raise UserError(
                    f"the demo pipeline ({module_name}) is not available in this version of sedsft; "
                    "pass your own with --pipeline module:function"
                ) from None
            raise UserError(
                f"cannot import {module_name!r} for --pipeline: no such module (is it on PYTHONPATH?)"
            ) from None
        raise
    func = getattr(module, func_name, None)
    if not callable(func):
        raise UserError(f"{module_name} has no function {func_name!r} for --pipeline")
    return func


def _point_runner(func: Callable, output_dir: Path, *, with_lam: bool) -> Callable[..., dict]:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        params = {}
    positional = [p for p in params.values() if p.kind != p.KEYWORD_ONLY]
    takes_three = len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in positional)
    if with_lam and params and not takes_three:
        raise UserError(
            "the grid sets lam=, but the pipeline takes only (mask_ratio, top_k); give it a third argument"
        )
    if "output_dir" not in params:
        return func

    def run(mask_ratio: float, top_k: int, *lam) -> dict:
        name = f"r{mask_ratio:g}_k{top_k}" + (f"_lam{lam[0]:g}" if lam else "")
        return func(mask_ratio, top_k, *lam, output_dir=output_dir / "points" / name)

    return run


@dataclass
class SweepArgs:
    """``sedsft sweep``: the pipeline, the grid (``--grid`` or the two lists), where the tables go."""

    pipeline: str = field(metadata={"help": "'demo' or module:function returning {metric: value}"})
    output_dir: str = field(
        metadata={"help": "where the log, tables and heatmap go (reuse it to resume)", "manifest": False}
    )
    grid: list[str] | None = field(
        default=None,
        metadata={
            "help": "e.g. --grid r=0.5,0.7,0.9 k=2,3 lam=1,2,4 (an axis left out: r 0.7, k 2, the pipeline's lambda)",
            "metavar": "r=...|k=...|lam=...",
        },
    )
    mask_ratios: list[float] | None = field(default=None, metadata={"help": "r values (instead of --grid)"})
    top_ks: list[int] | None = field(default=None, metadata={"help": "k values (instead of --grid)"})
    lams: list[float] | None = field(
        default=None,
        metadata={"help": "lambda values, with --mask_ratios and --top_ks (unset: the pipeline's)"},
    )
    metric: str | None = field(
        default=None, metadata={"help": "metric of the grid table and heatmap (default: avg)"}
    )
    unit: str | None = field(default=None, metadata={"help": "unit of the metrics, for the figure (e.g. %%)"})

    def __post_init__(self):
        if self.grid is not None:
            if self.mask_ratios is not None or self.top_ks is not None or self.lams is not None:
                raise UserError(
                    "give the grid once: either --grid r=... k=... lam=... or --mask_ratios with --top_ks (and --lams)"
                )
            self.mask_ratios, self.top_ks, self.lams = parse_grid(self.grid)
        elif self.mask_ratios is None or self.top_ks is None:
            raise UserError(
                "give the grid: --grid r=0.5,0.7,0.9 k=2,3 (or --mask_ratios 0.5,0.7 --top_ks 2,3)"
            )
        self.points = grid(
            self.mask_ratios, self.top_ks, self.lams
        )  # validates r, k and lam before any import


def main(argv: list[str]) -> int:
    (args, run_options) = parse_command(
        "sweep", argv, SweepArgs, RunOptions, description=__doc__.split("\n")[0]
    )
    out = Path(args.output_dir)
    func = load_pipeline(args.pipeline)
    result = run_sweep(
        args.points,
        _point_runner(func, out, with_lam=args.lams is not None),
        output_dir=out,
        metric=args.metric,
        unit=args.unit,
        pipeline=f"{func.__module__}:{func.__qualname__}",
        overwrite=run_options.overwrite,
        wait=run_options.wait,
    )
    print(result.table, end="")
    print(f"{len(result.computed)} points run, {len(result.reused)} read back from {result.files['log']}")
    print(f"wrote {', '.join(p.name for p in result.files.values())} to {out}")
    return 0
