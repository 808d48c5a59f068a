"""Per-position statistics of the next-token distribution, without gradient: the one statistics routine.

Calibration (tau), ``sedsft analyze topk`` / ``heatmap`` and any other measurement of a model read P_topk,
the gold probability and the entropy from :func:`token_stats`. It runs on the fused engine's forward:
the torch path's chunk routine (:mod:`.chunk`, reused ``[n, V]`` buffers), the chunked engine's row
statistics kernel (on CUDA where its chunk buffer fits), or the recompute engine's forward kernel (no
``[N, V]`` logits at all): the same code that gives ``fused_linear(..., return_stats=True)`` its numbers.

    stats = token_stats(hidden_rows, lm_head.weight, targets, top_k=10)   # rows [N, d], targets [N]
    stats.topk_mass(2)        # [N] P_top2
    stats.prob                # [N] gold probability
    stats.entropy             # [N] nats
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from . import chunked_engine
from .chunk import entropy_scratch, logits_into, softmax_in_place, top_and_gold
from .fused import GPU_ENGINES, select
from .logits import accumulation_dtype
from .torch_engine import auto_chunk_size


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
    impl: str = "auto",
) -> TokenStats:
    """Statistics of ``softmax(hidden @ weight.T + bias)`` at each row of ``hidden`` [N, d].

    ``weight=None`` means ``hidden`` already holds logits ``[N, V]`` (a head the engine cannot reproduce;
    always the torch path). ``targets`` [N] (optional) gives the gold probability. ``top_k`` larger than the
    vocabulary is clipped. ``impl`` and ``chunk_size`` (torch path: rows per chunk) as in ``fused_linear``.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be [N, d] rows, got shape {tuple(hidden.shape)}")
    if weight is not None and (weight.dim() != 2 or weight.shape[1] != hidden.shape[1]):
        raise ValueError(f"weight must be [V, {hidden.shape[1]}], got {tuple(weight.shape)}")
    if targets is not None and targets.shape != hidden.shape[:1]:
        raise ValueError(f"targets must be [{hidden.shape[0]}], got {tuple(targets.shape)}")
    vocab = hidden.shape[1] if weight is None else weight.shape[0]
    if bias is not None and bias.shape != (vocab,):
        raise ValueError(f"bias must be [{vocab}], got {tuple(bias.shape)}")
    k = min(top_k, vocab)
    if weight is not None and hidden.dtype != weight.dtype:
        hidden = hidden.to(weight.dtype)
    if weight is None:  # logits already: only the torch path reads them
        if impl not in ("auto", "torch"):
            select(impl, hidden.device, hidden.dtype)  # an unknown impl is refused as such
            raise ValueError(f"impl={impl!r} needs the head weight; rows that are logits take impl='torch'")
        return _torch_token_stats(hidden, weight, targets, bias=bias, k=k, chunk_size=chunk_size)
    n_rows, d = hidden.shape
    choice = select(
        impl, hidden.device, hidden.dtype, objective="ce", top_k=k, frozen_head=True,
        n_rows=n_rows, d=d, vocab=vocab, chunk_size=chunk_size,
    )  # fmt: skip
    if choice.impl == "chunked":
        return _chunked_token_stats(hidden, weight, targets, bias=bias, k=k, choice=choice)
    if choice.impl == "recompute":
        s = GPU_ENGINES["recompute"].forward_stats(
            hidden, weight, bias, targets, top_k=k, ids=True, entropy=True, picks=choice.launches
        )
        logp = s.gold - s.lse if targets is not None else None
        return TokenStats(s.top_values - s.lse[:, None], s.top_ids, s.entropy, logp)
    return _torch_token_stats(hidden, weight, targets, bias=bias, k=k, chunk_size=chunk_size)


def _chunked_token_stats(hidden, weight, targets, *, bias, k: int, choice) -> TokenStats:
    """The chunked engine's row statistics: cuBLAS logits per chunk, one read by the row kernel."""
    n_rows, vocab = hidden.shape[0], weight.shape[0]
    lch = choice.launches["row_stats"]
    rows = min(choice.chunk_size, max(n_rows, 1))
    buf = torch.empty(rows, vocab, dtype=hidden.dtype, device=hidden.device)  # [n_c, V] logits
    out = chunked_engine.RowStats.empty(n_rows, lch, hidden.device)
    y = targets if targets is not None else torch.zeros(n_rows, dtype=torch.long, device=hidden.device)
    for start in range(0, n_rows, rows):
        sl = slice(start, start + rows)
        z = logits_into(buf[: hidden[sl].shape[0]], hidden[sl], weight, bias)  # [n, V]
        chunked_engine.row_stats(lch, z, y[sl], out.rows(sl))
    logp = out.gold - out.lse if targets is not None else None
    top_logp = out.top_values[:, :k] - out.lse[:, None]  # [N, k]
    return TokenStats(top_logp, out.top_ids[:, :k].long(), out.entropy, logp)


def _torch_token_stats(hidden, weight, targets, *, bias, k: int, chunk_size: int | None) -> TokenStats:
    n_rows = hidden.shape[0]
    vocab = hidden.shape[1] if weight is None else weight.shape[0]
    acc = accumulation_dtype(hidden.dtype)
    rows = max(1, min(chunk_size or auto_chunk_size(n_rows, vocab, device=hidden.device), max(n_rows, 1)))
    zbuf = torch.empty(rows, vocab, dtype=acc, device=hidden.device)  # the reused [n, V] buffer
    scratch = entropy_scratch(zbuf)  # [max(64, n/8), V]
    f32 = dict(dtype=torch.float32, device=hidden.device)
    top_logp = torch.empty(n_rows, k, **f32)  # [N, k]
    top_ids = torch.empty(n_rows, k, dtype=torch.long, device=hidden.device)
    entropy = torch.empty(n_rows, **f32)
    logp = torch.empty(n_rows, **f32) if targets is not None else None
    for start in range(0, n_rows, rows):
        sl = slice(start, start + rows)
        h = hidden[sl]
        n = h.shape[0]
        if weight is None:  # the rows are logits already
            z = zbuf[:n].copy_(h)
            if bias is not None:
                z += bias
        else:
            z = logits_into(zbuf[:n], h, weight, bias)  # [n, V]
        top = top_and_gold(z, targets[sl] if targets is not None else None, top_k=k, ids=True)
        _, soft = softmax_in_place(z, top.max, scratch=scratch)
        top_logp[sl] = top.values - soft.lse[:, None]
        top_ids[sl] = top.ids
        entropy[sl] = soft.entropy
        if logp is not None:
            logp[sl] = top.gold - soft.lse
    return TokenStats(top_logp, top_ids, entropy, logp)
