"""Per-batch statistics that show what an objective is doing, kept as sums so they reduce exactly.

Sums (not means) add up across gradient-accumulation steps and processes; divide once at logging time.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class BatchStats:
    """Sums over the kept tokens of one batch; every field is a 0-dim float64 tensor without gradient."""

    tokens: Tensor  # number of scored positions
    masked: Tensor  # positions with M_t = 1 (SED's penalty active); 0 for other objectives
    penalty: Tensor  # sum of lam * M_t * (p - 1/2)^2
    prob: Tensor  # sum of the gold probability p
    entropy: Tensor  # sum of the next-token entropy (nats)
    topk_mass: Tensor  # sum of P_topk
    correct: Tensor  # positions whose argmax is the gold token
    masked_weight: Tensor  # sum of the gradient weight w_t over the positions with M_t = 1
    masked_negative: Tensor  # positions with M_t = 1 and w_t < 0 (the update lowers p there)

    @classmethod
    def zeros(cls, device=None) -> BatchStats:
        return cls(**{f.name: torch.zeros((), dtype=torch.float64, device=device) for f in fields(cls)})

    def __add__(self, other: BatchStats) -> BatchStats:
        return BatchStats(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def as_tensor(self) -> Tensor:
        """All sums in one vector (for a single all-reduce across processes)."""
        return torch.stack([getattr(self, f.name) for f in fields(self)])

    @classmethod
    def from_tensor(cls, t: Tensor) -> BatchStats:
        return cls(**{f.name: t[i] for i, f in enumerate(fields(cls))})

    def means(self) -> dict[str, float]:
        """Per-token means for logging: mask_rate, de_penalty, gold_prob, entropy, topk_mass, top1_acc;
        where some position was penalised also mask_weight (mean w_t there) and mask_neg_rate (share with w_t < 0)."""
        n = max(float(self.tokens), 1.0)
        out = {
            "mask_rate": float(self.masked) / n,
            "de_penalty": float(self.penalty) / n,
            "gold_prob": float(self.prob) / n,
            "entropy": float(self.entropy) / n,
            "topk_mass": float(self.topk_mass) / n,
            "top1_acc": float(self.correct) / n,
        }
        if float(self.masked) > 0:
            out["mask_weight"] = float(self.masked_weight) / float(self.masked)
            out["mask_neg_rate"] = float(self.masked_negative) / float(self.masked)
        return out


@dataclass
class LossOutput:
    """What an objective returns with ``return_stats=True``: the scalar loss and the batch's sums."""

    loss: Tensor
    stats: BatchStats
