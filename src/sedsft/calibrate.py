"""tau calibration: the (1 - r)-quantile of P_topk over a data sample, scored by the initial model.

SED-SFT penalises a position only when its top-k cumulative probability P_topk is below tau; with
masking ratio r, tau is chosen so that the r most confident positions are masked out, i.e. tau is
the (1 - r)-quantile of P_topk. sedsft computes it exactly: every position's P_topk is kept (4 bytes
each: 10 million positions take 40 MB), and the quantile is numpy's default "linear" definition
(``np.quantile(values, 1 - r)``), found by two order-statistic selections instead of a full sort. The
``[tokens, vocab]`` logits are never held: the head is applied in token chunks.

Differences from the authors' released code, on purpose: that code calibrates with k = 10 when k is
not given but masks with k = 2, and scores prompt tokens too. Here one k serves both, and by default
only positions that predict a label token are scored (``positions="all"`` scores every non-padding
position, as the released code does).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from .io import atomic_write_json, read_json
from .losses.head import HeadInputs, hidden_and_head

CALIBRATION_FILE = "sedsft_calibration.json"
POSITIONS = ("labels", "all")


@dataclass
class Calibration:
    """What a run needs to reproduce its tau; saved next to the run's outputs."""

    tau: float
    top_k: int
    mask_ratio: float
    positions: str
    num_positions: int
    num_sequences: int
    quantiles: dict[str, float] = field(default_factory=dict)  # a summary of the P_topk distribution
    sample: dict = field(default_factory=dict)  # how the data sample was drawn (file, seed, size)

    def save(self, path) -> None:
        atomic_write_json(path, asdict(self))

    @classmethod
    def load(cls, path) -> Calibration:
        return cls(**read_json(path))


def _check(top_k: int, mask_ratio: float, positions: str) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    if not (0.0 <= float(mask_ratio) <= 1.0) or math.isnan(float(mask_ratio)):
        raise ValueError(f"mask_ratio must be in [0, 1], got {mask_ratio}")
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")


def exact_quantile(values: Tensor, q: float) -> float:
    """numpy's default (linear) quantile of a 1-D tensor, exactly, in O(N) via two selections."""
    n = values.numel()
    if n == 0:
        raise ValueError(
            "no calibration positions: the data sample has no label tokens (check the data/labels)"
        )
    pos = q * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    v = values.double()
    v_lo = torch.kthvalue(v, lo + 1).values.item()
    v_hi = torch.kthvalue(v, hi + 1).values.item() if hi != lo else v_lo
    return v_lo + (pos - lo) * (v_hi - v_lo)


@torch.no_grad()
def topk_mass(model, batch: dict, *, top_k: int, positions: str = "labels", chunk_size: int = 256) -> Tensor:
    """P_topk at the chosen positions of one batch, as a 1-D fp32 tensor (no ``[B, T, V]`` logits held)."""
    try:
        parts = hidden_and_head(
            model, **{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        )
    except ValueError:  # a head the fused path does not reproduce: use the model's own logits
        logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
        parts = None
    if positions == "labels":
        sel = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
        sel[:, :-1] = batch["labels"][:, 1:] != -100  # positions whose next token is a label
    else:
        mask = batch.get("attention_mask")
        sel = mask.bool() if mask is not None else torch.ones_like(batch["input_ids"], dtype=torch.bool)
    out = []
    rows = parts.hidden[sel] if parts is not None else logits[sel]  # [N, d] or [N, V]
    for start in range(0, rows.shape[0], chunk_size):
        chunk = rows[start : start + chunk_size]
        z = _project(chunk, parts).float()  # [n, V]
        lse = z.logsumexp(-1, keepdim=True)
        out.append((z.topk(min(top_k, z.shape[-1]), dim=-1).values - lse).exp().sum(-1))
    return torch.cat(out) if out else torch.zeros(0)


def _project(rows: Tensor, parts: HeadInputs | None) -> Tensor:
    if parts is None:
        return rows
    z = rows @ parts.weight.T
    return z + parts.bias if parts.bias is not None else z


def calibrate(
    model,
    batches: Iterable[dict],
    *,
    top_k: int = 2,
    mask_ratio: float = 0.7,
    positions: str = "labels",
    max_tokens: int | None = None,
    sample: dict | None = None,
) -> Calibration:
    """Score ``batches`` (dicts with input_ids, attention_mask, labels) and return the full record."""
    _check(top_k, mask_ratio, positions)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    values, n_seq, n_pos = [], 0, 0
    try:
        for batch in batches:
            batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
            v = topk_mass(model, batch, top_k=top_k, positions=positions).cpu()
            if max_tokens is not None and n_pos + v.numel() > max_tokens:
                v = v[: max_tokens - n_pos]
            values.append(v)
            n_pos += v.numel()
            n_seq += batch["input_ids"].shape[0]
            if max_tokens is not None and n_pos >= max_tokens:
                break
    finally:
        model.train(was_training)
    all_v = torch.cat(values) if values else torch.zeros(0)
    tau = exact_quantile(all_v, 1.0 - float(mask_ratio))
    summary = {
        f"q{int(q * 100):02d}": exact_quantile(all_v, q) for q in (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
    }
    return Calibration(
        tau=tau,
        top_k=top_k,
        mask_ratio=float(mask_ratio),
        positions=positions,
        num_positions=int(all_v.numel()),
        num_sequences=n_seq,
        quantiles=summary,
        sample=dict(sample or {}),
    )


def calibrate_tau(
    model,
    batches: Iterable[dict],
    *,
    top_k: int = 2,
    mask_ratio: float = 0.7,
    positions: str = "labels",
    max_tokens: int | None = None,
) -> float:
    """tau = the (1 - mask_ratio)-quantile of P_topk over ``batches`` scored by ``model``."""
    return calibrate(
        model, batches, top_k=top_k, mask_ratio=mask_ratio, positions=positions, max_tokens=max_tokens
    ).tau
