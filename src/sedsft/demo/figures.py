"""The demo's training-curve figures, drawn from the trainers' own logs, each with its CSV beside it.

``figures/sft_curves.png``: loss, mask rate, entropy and gold-token probability per SFT step (seed 0,
one line per row; ``sedsft_metrics.jsonl``). ``figures/rl_curves.png``: GRPO mean reward and entropy
per step, the mean over seeds per row with the seeds' range shaded (``metrics.jsonl``).
"""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path

from sedsft.analysis.plots import new_figure, save_png
from sedsft.demo.config import Variant
from sedsft.demo.stages import rl_key, sft_key
from sedsft.io import atomic_write_text, read_jsonl_records

SFT_CURVES = {
    "loss": "training loss (nats/token)",
    "mask_rate": "share of tokens penalised (P_topk < tau)",
    "entropy": "entropy (nats)",
    "gold_prob": "p(gold token)",
}
RL_CURVES = {"reward": "mean reward (share correct)", "entropy": "entropy (nats)"}


def _csv(rows: list[dict]) -> str:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def plot_sft_curves(out: Path, rows: list[Variant]) -> Path | None:
    data = [
        {"row": v.key, "seed": 0, "step": r["step"], **{m: r.get(m) for m in SFT_CURVES}}
        for v in rows
        for r in read_jsonl_records(out / sft_key(v, 0) / "sedsft_metrics.jsonl")
        if "loss" in r
    ]
    title = "SFT training curves (seed 0; the trainer's sedsft_metrics.jsonl)"
    return _plot(out, "sft_curves", data, rows, SFT_CURVES, xlabel="SFT optimizer step", title=title)


def plot_rl_curves(out: Path, rows: list[Variant], seeds: int) -> Path | None:
    data = []
    for v in rows:
        for seed in range(seeds):
            logged = [x for x in read_jsonl_records(out / rl_key(v, seed) / "metrics.jsonl") if "reward" in x]
            for i, r in enumerate(logged):
                step = r.get("step") or i + 1
                data.append({"row": v.key, "seed": seed, "step": step, **{m: r.get(m) for m in RL_CURVES}})
    band = f"mean over {seeds} seeds, shaded: their range" if seeds > 1 else "one seed"
    title = f"GRPO on the shared filtered prompts ({band}; the trainer's metrics.jsonl)"
    return _plot(out, "rl_curves", data, rows, RL_CURVES, xlabel="GRPO step", title=title)


def _plot(out: Path, name: str, data: list[dict], rows: list[Variant], curves: dict, *, xlabel, title):
    """One panel per metric, one line per row: the mean over the seeds logged, their range shaded."""
    if not data:
        return None
    atomic_write_text(out / "figures" / f"{name}.csv", _csv(data))
    fig = new_figure(3 * len(curves) + 1, 3.4)
    axes = fig.subplots(1, len(curves))
    for ax, (m, unit) in zip(axes, curves.items()):
        for v in rows:
            by_step: dict[int, list[float]] = {}
            for r in data:
                if r["row"] == v.key and r[m] is not None:
                    by_step.setdefault(r["step"], []).append(r[m])
            if not by_step:
                continue
            steps = sorted(by_step)
            (line,) = ax.plot(steps, [statistics.fmean(by_step[s]) for s in steps], label=v.label, marker=".")
            if any(len(by_step[s]) > 1 for s in steps):
                lo, hi = [min(by_step[s]) for s in steps], [max(by_step[s]) for s in steps]
                ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(unit)
        ax.set_title(m)
    axes[0].legend(fontsize=6)
    fig.suptitle(title)
    return save_png(fig, out / "figures" / f"{name}.png")
