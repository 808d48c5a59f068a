"""Per-position statistics of the next-token distribution, without gradient: the one statistics routine.

Calibration (tau), ``sedsft analyze topk`` / ``heatmap`` and any other measurement of a model read P_topk,
the gold probability and the entropy from :func:`token_stats`, which streams the LM head in token chunks
and never holds ``[N, V]`` logits beyond one chunk.

    stats = token_stats(hidden_rows, lm_head.weight, targets, top_k=10)   # rows [N, d], targets [N]
    stats.topk_mass(2)        # [N] P_top2
    stats.prob                # [N] gold probability
    stats.entropy             # [N] nats
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

_CHUNK_ROWS = 256  # rows of [n, V] fp32 logits alive at a time on the torch path


@dataclass
class TokenStats:
    """Statistics at N scored positions; every tensor is fp32 (ids int64) and carries no gradient."""

    top_logp: Tensor  # [N, k] log-probabilities of the k most probable tokens, descending
    top_ids: Tensor  # [N, k] their token ids
    entropy: Tensor  # [N] entropy of the next-token distribution (nats)
    logp: Tensor | None = None  # [N] log-probability of the target token (None without targets)

    @property
    def num_positions(self) -> int:
        return int(self.top_logp.shape[0])

    @property
    def max_k(self) -> int:
        return int(self.top_logp.shape[1])

    @property
    def prob(self) -> Tensor:
        if self.logp is None:
            raise ValueError("these statistics were computed without targets: no gold probability")
        return self.logp.exp()

    def cumulative(self) -> Tensor:
        """``[N, k]``: column j is P_top(j+1), the mass of the j + 1 most probable tokens."""
        return self.top_logp.exp().cumsum(-1)

    def topk_mass(self, k: int) -> Tensor:
        """``[N]`` P_topk, the cumulative probability of the k most probable tokens (k <= max_k)."""
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.max_k:
            raise ValueError(f"k must be an integer in 1..{self.max_k} (the top_k computed), got {k!r}")
        return self.cumulative()[:, k - 1].contiguous()

    @classmethod
    def cat(cls, parts: list[TokenStats], *, top_k: int) -> TokenStats:
        if not parts:
            empty = torch.zeros(0)
            return cls(torch.zeros(0, top_k), torch.zeros(0, top_k, dtype=torch.long), empty, empty)
        logp = None if parts[0].logp is None else torch.cat([p.logp for p in parts])
        return cls(
            torch.cat([p.top_logp for p in parts]),
            torch.cat([p.top_ids for p in parts]),
            torch.cat([p.entropy for p in parts]),
            logp,
        )


@torch.no_grad()
def token_stats(
    hidden: Tensor,
    weight: Tensor | None,
    targets: Tensor | None = None,
    *,
    bias: Tensor | None = None,
    top_k: int = 2,
    chunk_size: int | None = None,
) -> TokenStats:
    """Statistics of ``softmax(hidden @ weight.T + bias)`` at each row of ``hidden`` [N, d].

    ``weight=None`` means ``hidden`` already holds logits ``[N, V]`` (a head the engine cannot reproduce).
    ``targets`` [N] (optional) gives the gold probability. ``top_k`` larger than the vocabulary is clipped.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be [N, d] rows, got shape {tuple(hidden.shape)}")
    if targets is not None and targets.shape != hidden.shape[:1]:
        raise ValueError(f"targets must be [{hidden.shape[0]}], got {tuple(targets.shape)}")
    vocab = hidden.shape[1] if weight is None else weight.shape[0]
    k = min(top_k, vocab)
    rows = chunk_size or _CHUNK_ROWS
    parts = []
    for start in range(0, hidden.shape[0], rows):
        h = hidden[start : start + rows]
        z = h if weight is None else h @ weight.T  # [n, V]
        if bias is not None:
            z = z + bias
        z = z.float()
        lse = z.logsumexp(-1)  # [n]
        top = z.topk(k, dim=-1)  # [n, k] sorted, descending
        logp_all = z - lse[:, None]  # [n, V]
        entropy = -(logp_all.exp() * logp_all).sum(-1)  # [n]
        logp = None
        if targets is not None:
            t = targets[start : start + rows]
            logp = logp_all.gather(1, t[:, None]).squeeze(1)  # [n]
        parts.append(TokenStats(top.values - lse[:, None], top.indices, entropy, logp))
    return TokenStats.cat(parts, top_k=k)
