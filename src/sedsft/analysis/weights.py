"""Effective gradient weights w(p): how much of cross-entropy's logit gradient each objective keeps.

For CE, DFT and SED-SFT the per-token logit gradient is ``w * (softmax(z) - onehot(y))``: CE with every
token scaled by ``w``, a function of the gold probability p alone.

    CE                  w = 1
    DFT                 w = p
    SED-SFT, M = 1      w = 1 - 2 lam p (p - 1/2)        (M = 0: w = 1, as CE)

``w > 0`` raises p (more slowly than CE when ``w < 1``); ``w < 0`` lowers it. SED's ``w`` vanishes at

    p*(lam) = (lam + sqrt(lam^2 + 8 lam)) / (4 lam),

which lies inside (0, 1) only for lam > 1 (0.81 at lam = 2, 0.68 at lam = 4): at the paper's lam = 1
``w = (1 - p)(1 + 2p) >= 0`` and the penalty only slows p's climb to 1, it never holds p below 1.

GEM's gradient is ``softmax(z / beta) - onehot(y)``, not a multiple of CE's. Its gold-logit component
``q_y - 1`` has the same form, so ``w = (1 - q_y) / (1 - p)`` is its equivalent on the gold logit; it
depends on how the rest of the mass is spread, and this module uses the two-outcome case (all of
``1 - p`` on one other token), where ``q_y = p^(1/beta) / (p^(1/beta) + (1 - p)^(1/beta))``.

The curves are not restated formulas: :func:`weight_curve` differentiates the registry's own loss
(:data:`sedsft.losses.OBJECTIVES`) with autograd on two-outcome logits and divides by CE's gradient.
:func:`measured_weights` reads what the trainer logged (``mask_weight``, ``mask_neg_rate`` from
:class:`~sedsft.train.SEDSFTTrainer`'s statistics) from a run's ``sedsft_metrics.jsonl``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from sedsft.errors import UserError
from sedsft.io import atomic_write_text, read_jsonl_records
from sedsft.losses.logits import token_terms
from sedsft.losses.objectives import GEMOptions, get_objective

from .plots import new_figure, save_png


def stationary_point(lam: float) -> float | None:
    """p* in (0, 1) where SED-SFT's weight ``1 - 2 lam p (p - 1/2)`` is zero; None when lam <= 1."""
    if not (lam >= 0 and math.isfinite(lam)):
        raise UserError(f"lam must be a finite number >= 0, got {lam}")
    if lam <= 1.0:
        return None
    return (lam + math.sqrt(lam * lam + 8.0 * lam)) / (4.0 * lam)


def weight_curve(objective: str, p: Sequence[float], **options) -> list[float]:
    """w(p) of ``objective`` (registry name and options) on the gold logit of a two-outcome token.

    The token's logits are ``[log p, log(1 - p)]`` with the gold token first; ``w`` is the gold-logit
    gradient of the objective's per-token loss divided by CE's, ``p - 1``. SED is taken on a penalised
    token (the mask forced on); pass ``tau`` only if you want the mask decided by P_top-k.
    """
    obj = get_objective(objective)
    probs = torch.tensor([float(x) for x in p], dtype=torch.float64)  # [P]
    if probs.numel() == 0 or bool(((probs <= 0) | (probs >= 1)).any()):
        raise UserError("p values must lie strictly between 0 and 1")
    if "tau" in {f for f in obj.options_cls.__dataclass_fields__} - {k for k, _ in obj.fixed}:
        options.setdefault("tau", 1.0)  # with P_topk forced to 0 below, any tau > 0 penalises
    opts = obj.options(**options)
    z = torch.stack([probs.log(), (1 - probs).log()], dim=1).requires_grad_(True)  # [P, 2]
    y = torch.zeros(len(probs), dtype=torch.long)  # [P] the gold token is index 0
    terms, _, _ = token_terms(z, y, top_k=opts.top_k, gem=opts if obj.uses_gem_weights else None)
    terms = replace(terms, topk_mass=torch.zeros_like(terms.topk_mass))  # a token with room to explore
    (grad,) = torch.autograd.grad(obj.loss(terms, opts).sum(), z)  # [P, 2]
    return (grad[:, 0] / (probs - 1)).tolist()


@dataclass
class MeasuredWeights:
    """What a SED-SFT run's trainer logged about w on its penalised tokens."""

    steps: list[int]
    mask_rate: list[float]  # share of label tokens penalised, per logged window
    mask_weight: list[float]  # mean w over the penalised tokens, per window
    mask_neg_rate: list[float]  # share of penalised tokens with w < 0, per window

    def mean(self, name: str) -> float | None:
        """Mean over the logged windows (each the same number of optimizer steps)."""
        values = getattr(self, name)
        return sum(values) / len(values) if values else None


def measured_weights(metrics_path: str | os.PathLike) -> MeasuredWeights:
    """The trainer's per-window w statistics from ``sedsft_metrics.jsonl`` (training lines only)."""
    path = Path(metrics_path)
    if not path.is_file():
        raise UserError(f"{path} not found: pass the sedsft_metrics.jsonl of a finished `sedsft sft` run")
    rows = [r for r in read_jsonl_records(path) if "mask_weight" in r and "loss" in r]
    return MeasuredWeights(
        steps=[int(r["step"]) for r in rows],
        mask_rate=[float(r["mask_rate"]) for r in rows],
        mask_weight=[float(r["mask_weight"]) for r in rows],
        mask_neg_rate=[float(r["mask_neg_rate"]) for r in rows],
    )


# ---- the figure and its numbers -------------------------------------------------------------------

GRID = [i / 200 for i in range(1, 200)]  # p in (0, 1), step 0.005


def curves(
    *, lams: Sequence[float] = (1.0, 2.0, 4.0), gem_beta: float = GEMOptions.beta
) -> dict[str, list[float]]:
    """label -> w on :data:`GRID` for CE, DFT, GEM (two-outcome) and SED-SFT on a penalised token per lam."""
    out = {
        "CE": weight_curve("ce", GRID),
        "DFT": weight_curve("dft", GRID),
        f"GEM beta={gem_beta:g} (gold logit, two outcomes)": weight_curve("gem", GRID, beta=gem_beta),
    }
    for lam in lams:
        out[f"SED-SFT lam={lam:g} (M=1)"] = weight_curve("sed", GRID, lam=float(lam))
    return out


def write_weights(
    output_dir: str | os.PathLike,
    *,
    lams: Sequence[float] = (1.0, 2.0, 4.0),
    gem_beta: float = GEMOptions.beta,
    measured: dict[str, MeasuredWeights] | None = None,
) -> dict[str, Path]:
    """``weights.png`` (w(p) curves; with ``measured`` runs also their logged w statistics per step),
    ``weights.csv`` (the curves) and ``weights.md`` (p*(lam) and the measured means)."""
    out = Path(output_dir)
    cs = curves(lams=lams, gem_beta=gem_beta)
    csv = "p," + ",".join(f'"{k}"' for k in cs) + "\n"
    csv += "".join(f"{p!r}," + ",".join(f"{cs[k][i]!r}" for k in cs) + "\n" for i, p in enumerate(GRID))
    files = {"csv": atomic_write_text(out / "weights.csv", csv)}
    files["table"] = atomic_write_text(out / "weights.md", weights_table(lams, measured or {}))
    measured = {k: m for k, m in (measured or {}).items() if m.steps}
    fig = new_figure(11 if measured else 5.5, 3.6)
    axes = fig.subplots(1, 3 if measured else 1)
    ax = axes[0] if measured else axes
    for label, w in cs.items():
        ax.plot(GRID, w, label=label, linestyle="--" if label.startswith("GEM") else "-")
    stars = [s for s in (stationary_point(float(lam)) for lam in lams) if s is not None]
    for i, star in enumerate(stars):
        ax.plot([star], [0.0], "k.", markersize=8)
        ax.annotate(
            f"p*={star:.2f}", (star, 0.0), textcoords="offset points", xytext=(-34, -12 - 10 * i), fontsize=7
        )
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("gold-token probability p")
    ax.set_ylabel("w: share of CE's logit gradient")
    ax.set_title("effective gradient weight w(p)")
    ax.legend(fontsize=6)
    if measured:
        for name, m in measured.items():
            axes[1].plot(m.steps, m.mask_weight, marker=".", label=name)
            axes[2].plot(m.steps, m.mask_neg_rate, marker=".", label=name)
        axes[1].set_ylabel("mean w on penalised tokens")
        axes[2].set_ylabel("share of penalised tokens with w < 0")
        for a in axes[1:]:
            a.set_xlabel("SFT optimizer step")
            a.legend(fontsize=7)
        axes[1].set_title("measured: mean w (trainer statistics)")
        axes[2].set_title("measured: w < 0 (trainer statistics)")
    files["figure"] = save_png(fig, out / "weights.png")
    return files


def weights_table(lams: Sequence[float], measured: dict[str, MeasuredWeights]) -> str:
    """Markdown: p*(lam) per lam, and the measured means of each run."""
    lines = ["| lam | p*(lam) | w at p=0.9 | w at p=0.99 |", "| ---: | ---: | ---: | ---: |"]
    for lam in lams:
        star = stationary_point(float(lam))
        w = weight_curve("sed", [0.9, 0.99], lam=float(lam))
        lines.append(
            f"| {lam:g} | {'none (w >= 0)' if star is None else f'{star:.3f}'} | {w[0]:.3f} | {w[1]:.3f} |"
        )
    if measured:
        lines += [
            "",
            "| run | share of tokens penalised | mean w on penalised tokens | share of them with w < 0 |",
            "| --- | ---: | ---: | ---: |",
        ]
        for name, m in measured.items():
            cells = [m.mean(k) for k in ("mask_rate", "mask_weight", "mask_neg_rate")]
            lines.append(f"| {name} | " + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |")
    return "\n".join(lines) + "\n"
