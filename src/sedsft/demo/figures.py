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
    data = []
    for v in rows:
        for r in read_jsonl_records(out / sft_key(v, 0) / "sedsft_metrics.jsonl"):
            if "loss" in r:
                data.append({"row": v.key, "step": r["step"], **{m: r.get(m) for m in SFT_CURVES}})
    if not data:
        return None
    atomic_write_text(out / "figures" / "sft_curves.csv", _csv(data))
    fig = new_figure(12, 3.4)
    axes = fig.subplots(1, len(SFT_CURVES))
    for ax, (m, unit) in zip(axes, SFT_CURVES.items()):
        for v in rows:
            pts = [(r["step"], r[m]) for r in data if r["row"] == v.key and r[m] is not None]
            if pts:
                ax.plot(*zip(*pts), label=v.label, marker=".")
        ax.set_xlabel("SFT optimizer step")
        ax.set_ylabel(unit)
        ax.set_title(m)
    axes[0].legend(fontsize=6)
    fig.suptitle("SFT training curves (seed 0; the trainer's sedsft_metrics.jsonl)")
    return save_png(fig, out / "figures" / "sft_curves.png")


def plot_rl_curves(out: Path, rows: list[Variant], seeds: int) -> Path | None:
    data = []
    for v in rows:
        for seed in range(seeds):
            for i, r in enumerate(
                x for x in read_jsonl_records(out / rl_key(v, seed) / "metrics.jsonl") if "reward" in x
            ):
                data.append(
                    {
                        "row": v.key,
                        "seed": seed,
                        "step": r.get("step") or i + 1,
                        **{m: r.get(m) for m in RL_CURVES},
                    }
                )
    if not data:
        return None
    atomic_write_text(out / "figures" / "rl_curves.csv", _csv(data))
    fig = new_figure(9, 3.4)
    axes = fig.subplots(1, len(RL_CURVES))
    for ax, (m, unit) in zip(axes, RL_CURVES.items()):
        for v in rows:
            by_step: dict[int, list[float]] = {}
            for r in data:
                if r["row"] == v.key and r[m] is not None:
                    by_step.setdefault(r["step"], []).append(r[m])
            if not by_step:
                continue
            steps = sorted(by_step)
            (line,) = ax.plot(steps, [statistics.fmean(by_step[s]) for s in steps], label=v.label)
            if seeds > 1:
                lo, hi = [min(by_step[s]) for s in steps], [max(by_step[s]) for s in steps]
                ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set_xlabel("GRPO step")
        ax.set_ylabel(unit)
        ax.set_title(f"GRPO {m}")
    axes[0].legend(fontsize=6)
    band = f"mean over {seeds} seeds, shaded: their range" if seeds > 1 else "one seed"
    fig.suptitle(f"GRPO on the shared filtered prompts ({band}; the trainer's metrics.jsonl)")
    return save_png(fig, out / "figures" / "rl_curves.png")
