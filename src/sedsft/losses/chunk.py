"""The torch engine's per-chunk routine: the logits of ``n`` rows in a reused buffer, and their statistics.

``fused_linear`` (impl="torch") and ``token_stats`` (impl="torch") both read a chunk's statistics here,
so the trainer's logged numbers and calibration/analysis come from the same computation:

    z = logits_into(buf, h, weight, bias)                  # [n, V] in the reused buffer
    top = top_and_gold(z, y, top_k=2)                      # z untouched: max / top-k, gold logit
    probs, soft = softmax_in_place(z, top.max, entropy_out=ebuf)   # z is consumed

Everything is vectorised over the chunk (no per-row loop) and nothing here waits for the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def logits_into(buf: Tensor, h: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """z = h W^T + b written into the reused buffer ``buf`` [n, V] (accumulation dtype)."""
    if buf.dtype == weight.dtype:
        if bias is None:
            return torch.mm(h, weight.T, out=buf)
        return torch.addmm(bias, h, weight.T, out=buf)
    z = h @ weight.T  # [n, V] in bf16/fp16 (as the model's own head rounds it), then up-cast into the buffer
    if bias is not None:
        z += bias
    return buf.copy_(z)


@dataclass
class TopAndGold:
    """Read off the logits before they are consumed; each tensor has ``n`` rows."""

    values: Tensor  # [n, k] the k largest logits, descending (k = 1: the row maximum)
    ids: Tensor | None  # [n, k] their token ids (when asked for)
    gold: Tensor | None  # [n] z_y, the target's logit (when targets are given)

    @property
    def max(self) -> Tensor:
        return self.values[:, 0]


def top_and_gold(z: Tensor, y: Tensor | None, *, top_k: int | None, ids: bool = False) -> TopAndGold:
    """The top-``top_k`` logits (only the maximum when ``top_k`` is None) and the gold logit of ``z`` [n, V]."""
    gold = z.gather(1, y[:, None]).squeeze(1) if y is not None else None  # [n]
    if top_k is None and not ids:
        return TopAndGold(z.amax(-1, keepdim=True), None, gold)  # [n, 1]
    top = z.topk(min(top_k or 1, z.shape[1]), dim=-1)  # [n, k] sorted, descending
    return TopAndGold(top.values, top.indices if ids else None, gold)


@dataclass
class Softmax:
    sumexp: Tensor  # [n] sum_v exp(z_v - max)
    lse: Tensor  # [n] log sum_v exp(z_v)
    entropy: Tensor | None  # [n] nats (when an entropy buffer was given)


def softmax_in_place(z: Tensor, zmax: Tensor, *, entropy_out: Tensor | None = None) -> tuple[Tensor, Softmax]:
    """softmax(z) for ``z`` [n, V], consuming ``z``; with ``entropy_out`` (a second [n, V] buffer) the entropy too.

    Without an entropy buffer the probabilities overwrite ``z``. With one, exp(z - max) goes into
    ``entropy_out`` while ``z - max`` stays, so H = log s - sum_v e_v (z_v - max) / s is one batched dot
    (``einsum`` runs as a batched matmul: no product temporary) and the probabilities are in ``entropy_out``.
    """
    z.sub_(zmax[:, None])
    if entropy_out is None:
        e = z.exp_()
        ez = None
    else:
        e = torch.exp(z, out=entropy_out)
        ez = torch.einsum("nv,nv->n", e, z)  # [n] sum_v e_v z'_v
    sumexp = e.sum(-1)  # [n]
    e.div_(sumexp[:, None])
    log_s = sumexp.log()
    entropy = log_s - ez / sumexp if ez is not None else None
    return e, Softmax(sumexp, zmax + log_s, entropy)
