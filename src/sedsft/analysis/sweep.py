"""Sensitivity sweep over SED-SFT's masking ratio r, top-k and lambda (the paper's Table 3), resumable.

:func:`run_sweep` calls a pipeline ``run_point(mask_ratio, top_k) -> {metric: value}`` once per grid
point (``run_point(mask_ratio, top_k, lam)`` for points that set lambda) and appends each finished
point to ``sweep_points.jsonl`` as soon as it returns; run again with the same output folder and the
finished points are read back instead of recomputed (a point is keyed by (r, k) and lambda when set,
r and lambda rounded to 6 decimals). Then it writes a Table 3-style Markdown table (one row per point,
one column per metric), an r x k grid of one summary metric per lambda as Markdown, CSV and a heatmap
PNG, and a JSON summary. Outputs are rewritten after every point, so an interrupted sweep still leaves
its tables. A pipeline that returns NaN or infinity for a metric is refused, naming the point; the
points before it stay recorded.

The summary metric is ``metric`` when given, else ``"avg"`` when every point reports one, else the
mean of each point's metrics (named ``"mean of metrics"``).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sedsft.errors import UserError
from sedsft.io import JsonlLog, atomic_write_json, atomic_write_text
from sedsft.runs import RunSpec, open_run

from .plots import new_figure, save_png

POINTS_LOG = "sweep_points.jsonl"
MEAN_OF_METRICS = "mean of metrics"


@dataclass(frozen=True)
class SweepPoint:
    mask_ratio: float  # r: the fraction of most confident positions kept out of the penalty
    top_k: int  # k of P_topk
    lam: float | None = None  # SED's lambda; None = the pipeline's default (the point's key leaves it out)

    def __post_init__(self):
        r, k, lam = self.mask_ratio, self.top_k, self.lam
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise UserError(f"top_k must be an integer >= 1, got {k!r}")
        if not isinstance(r, (int, float)) or isinstance(r, bool) or not 0.0 <= r <= 1.0:
            raise UserError(f"mask_ratio must be a number in [0, 1], got {r!r}")
        object.__setattr__(self, "mask_ratio", round(float(r), 6))
        if lam is not None:
            if (
                isinstance(lam, bool)
                or not isinstance(lam, (int, float))
                or not (math.isfinite(lam) and lam >= 0)
            ):
                raise UserError(f"lam must be a finite number >= 0, got {lam!r}")
            object.__setattr__(self, "lam", round(float(lam), 6))

    @property
    def key(self) -> str:
        return f"r={self.mask_ratio!r},k={self.top_k}" + (
            f",lam={self.lam!r}" if self.lam is not None else ""
        )

    def args(self) -> tuple:
        """The pipeline's positional arguments: (r, k), and lambda when the point sets it."""
        return (self.mask_ratio, self.top_k) if self.lam is None else (self.mask_ratio, self.top_k, self.lam)


def grid(
    mask_ratios: Iterable[float], top_ks: Iterable[int], lams: Iterable[float] | None = None
) -> list[SweepPoint]:
    """Every (r, k[, lam]) combination, r-major, in the order given."""
    lam_values = [None] if lams is None else [float(x) for x in lams]
    return [SweepPoint(float(r), int(k), lam) for r in mask_ratios for k in top_ks for lam in lam_values]


@dataclass
class SweepResult:
    rows: list[dict]  # {"mask_ratio", "top_k", "metrics": {...}, "seconds"} per point, in grid order
    computed: list[SweepPoint]  # points run by this call
    reused: list[SweepPoint]  # points read back from an earlier run
    metric: str  # the summary metric of the grid table and heatmap
    table: str  # the Markdown tables
    files: dict[str, Path] = field(default_factory=dict)


def _as_points(points: Iterable) -> list[SweepPoint]:
    out, seen = [], set()
    for p in points:
        point = p if isinstance(p, SweepPoint) else SweepPoint(*p)
        if point.key not in seen:  # a repeated point is run once
            seen.add(point.key)
            out.append(point)
    if not out:
        raise UserError("the sweep grid is empty; give at least one mask ratio and one top_k")
    return out


def _clean_metrics(metrics, point: SweepPoint) -> dict[str, float]:
    if not isinstance(metrics, dict) or not metrics:
        raise UserError(
            f"the pipeline returned {type(metrics).__name__} for {point.key}; it must return a non-empty dict of metric -> number"
        )
    out = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
            raise UserError(f"metric {name!r} of {point.key} is {value!r}; metrics must be numbers")
        number = float(value)
        if not math.isfinite(number):  # a NaN cell would read as a result; it is the pipeline failing
            raise UserError(
                f"metric {name!r} of {point.key} is {number}; the pipeline must return finite numbers "
                "(this point was not recorded; fix the pipeline and rerun to resume)"
            )
        out[str(name)] = number
    return out


def _finite(record: dict) -> bool:
    """A logged point whose metrics are all finite numbers (an older sedsft logged NaN: rerun those)."""
    metrics = record.get("metrics")
    return isinstance(metrics, dict) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in metrics.values()
    )


def run_sweep(
    points: Iterable[SweepPoint | tuple[float, int]],
    run_point: Callable[..., dict[str, float]],
    *,
    output_dir: str | os.PathLike,
    metric: str | None = None,
    unit: str | None = None,
    title: str | None = None,
    pipeline: str | None = None,
    overwrite: bool = False,
    wait: bool = False,
) -> SweepResult:
    """Run ``run_point(*point.args())`` for every point not already in ``output_dir/sweep_points.jsonl``;
    write the tables.

    ``output_dir`` is a run folder (:mod:`sedsft.runs`) of this ``pipeline`` (default: ``run_point``'s
    module and name): points of another pipeline are never read back; ``overwrite`` starts over;
    ``wait`` waits for another process using the folder.
    """
    pts = _as_points(points)
    out = Path(output_dir)
    owner = (
        run_point if hasattr(run_point, "__qualname__") else type(run_point)
    )  # a function or a callable object
    name = pipeline or f"{owner.__module__}:{owner.__qualname__}"
    open_run(out, RunSpec("sweep", settings={"pipeline": name}), overwrite=overwrite, wait=wait)
    log = JsonlLog(out / POINTS_LOG)
    done = {rec["key"]: rec for rec in log.records() if "key" in rec and _finite(rec)}  # the last one wins
    computed, reused = [], [p for p in pts if p.key in done]

    def write() -> SweepResult:
        return _write_outputs(pts, done, computed, reused, out, metric=metric, unit=unit, title=title)

    result = None
    for point in pts:
        if point.key in done:
            continue
        start = time.perf_counter()
        try:
            metrics = _clean_metrics(run_point(*point.args()), point)
        except BaseException:
            if any(
                p.key in done for p in pts
            ):  # leave tables of what finished, then re-raise the pipeline's error
                with contextlib.suppress(Exception):
                    write()
            raise
        record = {
            "key": point.key,
            "mask_ratio": point.mask_ratio,
            "top_k": point.top_k,
            "lam": point.lam,
            "metrics": metrics,
            "seconds": round(time.perf_counter() - start, 3),
        }
        log.append(record)
        done[point.key] = record
        computed.append(point)
        result = write()  # after every point, so an interrupted sweep still has its tables
    return result if result is not None else write()


def summary_metric(rows: Sequence[dict], metric: str | None) -> str:
    if metric is not None:
        missing = [_name(r) for r in rows if metric not in r["metrics"]]
        if missing:
            have = sorted({m for r in rows for m in r["metrics"]})
            raise UserError(
                f"metric {metric!r} is missing at {', '.join(missing)}; the pipeline reports {have}"
            )
        return metric
    return "avg" if all("avg" in r["metrics"] for r in rows) else MEAN_OF_METRICS


def value_of(row: dict, metric: str) -> float:
    if metric == MEAN_OF_METRICS:
        return float(np.mean(list(row["metrics"].values())))
    return row["metrics"][metric]


def _fmt(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:.4g}"


def _name(row: dict) -> str:
    lam = row.get("lam")
    return f"r={row['mask_ratio']:g},k={row['top_k']}" + (f",lam={lam:g}" if lam is not None else "")


def _lams(rows: Sequence[dict]) -> list[float | None]:
    return sorted({r.get("lam") for r in rows}, key=lambda x: (x is not None, x or 0.0))


def markdown_tables(rows: Sequence[dict], metric: str) -> str:
    """Table 3 layout (a row per point, a column per metric), then the r x k grid of ``metric`` per lambda."""
    names = list(dict.fromkeys(m for r in rows for m in r["metrics"] if m != "avg"))
    names += ["avg"] if any("avg" in r["metrics"] for r in rows) else []
    with_lam = any(r.get("lam") is not None for r in rows)
    lam_head, lam_rule = ("lam | ", "---|") if with_lam else ("", "")
    lines = [f"| r | k | {lam_head}" + " | ".join(names) + " |", "|---|---|" + lam_rule + "---|" * len(names)]
    for r in rows:
        cells = [_fmt(r["metrics"][n]) if n in r["metrics"] else "" for n in names]
        lam = r.get("lam")
        lam_cell = (f"{lam:g} | " if lam is not None else "default | ") if with_lam else ""
        lines.append(f"| {r['mask_ratio']:g} | {r['top_k']} | {lam_cell}" + " | ".join(cells) + " |")
    rs = sorted({r["mask_ratio"] for r in rows})
    ks = sorted({r["top_k"] for r in rows})
    for lam in _lams(rows):
        by = {(r["mask_ratio"], r["top_k"]): value_of(r, metric) for r in rows if r.get("lam") == lam}
        where = "" if lam is None else f", lambda = {lam:g}"
        lines += [
            "",
            f"{metric} by masking ratio r (rows) and top-k (columns){where}:",
            "",
            "| r \\ k | " + " | ".join(str(k) for k in ks) + " |",
            "|---|" + "---|" * len(ks),
        ]
        for r in rs:
            lines.append(
                f"| {r:g} | " + " | ".join(_fmt(by[(r, k)]) if (r, k) in by else "" for k in ks) + " |"
            )
    return "\n".join(lines) + "\n"


def plot_sweep(
    rows: Sequence[dict], metric: str, path, *, unit: str | None = None, title: str | None = None
) -> Path:
    """Heatmap of ``metric`` over r (rows) and k (columns), one panel per lambda; points not run yet are blank."""
    rs = sorted({r["mask_ratio"] for r in rows})
    ks = sorted({r["top_k"] for r in rows})
    lams = _lams(rows)
    panel_w = max(4.5, 1.1 * len(ks) + 2.5)
    fig = new_figure(panel_w * len(lams), max(3.2, 0.6 * len(rs) + 1.8))
    axes = fig.subplots(1, len(lams), squeeze=False)[0]
    values = [value_of(r, metric) for r in rows]
    finite = [v for v in values if math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    mid = (lo + hi) / 2
    for ax, lam in zip(axes, lams):
        grid_v = np.full((len(rs), len(ks)), np.nan)  # [R, K]
        for r in rows:
            if r.get("lam") == lam:
                grid_v[rs.index(r["mask_ratio"]), ks.index(r["top_k"])] = value_of(r, metric)
        im = ax.imshow(
            np.ma.masked_invalid(grid_v), cmap="viridis", aspect="auto", origin="lower", vmin=lo, vmax=hi
        )
        for i in range(len(rs)):
            for j in range(len(ks)):
                v = grid_v[i, j]
                if np.isfinite(v):
                    ax.text(
                        j,
                        i,
                        _fmt(v),
                        ha="center",
                        va="center",
                        fontsize=9,
                        color="black" if v > mid else "white",
                    )
        ax.set_xticks(range(len(ks)), [str(k) for k in ks])
        ax.set_yticks(range(len(rs)), [f"{r:g}" for r in rs])
        ax.set_xlabel("top-k (number of tokens in P_topk)")
        ax.set_ylabel("masking ratio r (fraction of positions)")
        if lam is not None:
            ax.set_title(f"lambda = {lam:g}", fontsize=9)
    label = f"{metric} ({unit})" if unit else f"{metric} (units as reported by the pipeline)"
    fig.colorbar(im, ax=list(axes), label=label)
    fig.suptitle(
        title or f"SED-SFT sensitivity to r, k{' and lambda' if len(lams) > 1 else ''}: {metric}", fontsize=10
    )
    return save_png(fig, path)


def _write_outputs(pts, done, computed, reused, out: Path, *, metric, unit, title) -> SweepResult:
    fields = ("mask_ratio", "top_k", "lam", "metrics", "seconds")  # logs from before lambda: lam None
    rows = [{k: done[p.key].get(k) for k in fields} for p in pts if p.key in done]
    name = summary_metric(rows, metric)
    table = markdown_tables(rows, name)
    with_lam = any(r["lam"] is not None for r in rows)

    def ids(r: dict) -> str:
        return f"{r['mask_ratio']!r},{r['top_k']}" + (
            f",{'' if r['lam'] is None else repr(r['lam'])}" if with_lam else ""
        )

    head = "mask_ratio,top_k" + (",lam" if with_lam else "")
    csv = f"{head},metric,value\n" + "".join(
        f"{ids(r)},{m},{v!r}\n" for r in rows for m, v in r["metrics"].items()
    )
    grid_csv = f"{head},{name.replace(' ', '_')}\n" + "".join(
        f"{ids(r)},{value_of(r, name)!r}\n" for r in rows
    )
    files = {
        "table_md": atomic_write_text(out / "sweep_table.md", table),
        "results_csv": atomic_write_text(out / "sweep_results.csv", csv),
        "grid_csv": atomic_write_text(out / "sweep_grid.csv", grid_csv),
        "figure": plot_sweep(rows, name, out / "sweep_heatmap.png", unit=unit, title=title),
    }
    files["summary_json"] = atomic_write_json(
        out / "sweep_summary.json",
        {
            "metric": name,
            "unit": unit,
            "points": len(pts),
            "finished": len(rows),
            "pending": [p.key for p in pts if p.key not in done],
            "rows": rows,
        },
    )
    files["log"] = out / POINTS_LOG
    return SweepResult(
        rows=rows, computed=list(computed), reused=list(reused), metric=name, table=table, files=files
    )


__all__ = ["SweepPoint", "SweepResult", "grid", "markdown_tables", "plot_sweep", "run_sweep"]
