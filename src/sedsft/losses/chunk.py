"""The torch engine's per-chunk routine: the logits of ``n`` rows in a reused buffer, and their statistics.

``fused_linear`` (impl="torch") and ``token_stats`` (impl="torch") both read a chunk's statistics here,
so the trainer's logged numbers and calibration/analysis come from the same computation:

    z = logits_into(buf, h, weight, bias)                  # [n, V] in the reused buffer
    top = top_and_gold(z, y, top_k=2)                      # z untouched: max / top-k, gold logit
    probs, soft = softmax_in_place(z, top.max, scratch=entropy_scratch(z))   # z is consumed

Everything is vectorised over the chunk, or over a few blocks of rows for the entropy (no per-row loop),
and nothing here waits for the device.
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


ENTROPY_BLOCK_ROWS = 64  # the least rows of the entropy's scratch buffer
ENTROPY_BLOCKS = 8  # at most this many blocks per chunk: the scratch is ~1/8 of the chunk's buffer


def entropy_scratch(z: Tensor) -> Tensor:
    """The ``[b, V]`` scratch buffer :func:`softmax_in_place` needs for the entropy.

    b = max(64, n / 8) rows for a chunk ``z`` of n rows: on CPU (chunks of a few hundred rows) 64 rows,
    a small buffer; on a GPU, whose chunks have thousands of rows, at most 8 blocks per chunk, so the
    loop costs a few kernel launches, not one per 64 rows.
    """
    n = z.shape[0]
    rows = min(n, max(ENTROPY_BLOCK_ROWS, -(-n // ENTROPY_BLOCKS)))
    return torch.empty(rows, z.shape[1], dtype=z.dtype, device=z.device)


def softmax_in_place(z: Tensor, zmax: Tensor, *, scratch: Tensor | None = None) -> tuple[Tensor, Softmax]:
    """softmax(z) for ``z`` [n, V], written over ``z``; with ``scratch`` ([b, V], any b >= 1) the entropy too.

    The entropy is H = log s - sum_v e_v z'_v / s with z' = z - max and e = exp(z'): it needs e and z'
    at once. They meet in the scratch buffer one block of b rows at a time (e of the block goes to the
    scratch, the dot with z' is one batched product, then e is copied back over z'), so the statistic
    costs about one extra pass and a b-row buffer instead of a second ``[n, V]`` one -- which would
    halve the rows per chunk for the same memory, and on CPU every chunk streams the whole head
    weight through memory again.
    """
    z.sub_(zmax[:, None])
    ez = None
    if scratch is not None:
        ez = torch.empty(z.shape[0], dtype=z.dtype, device=z.device)  # [n] sum_v e_v z'_v
        b = scratch.shape[0]
        for r in range(0, z.shape[0], b):
            zb = z[r : r + b]  # [b, V]
            eb = torch.exp(zb, out=scratch[: zb.shape[0]])
            ez[r : r + b] = torch.einsum("nv,nv->n", eb, zb)  # a batched dot: no product temporary
            zb.copy_(eb)
    else:
        z.exp_()
    e = z
    sumexp = e.sum(-1)  # [n]
    e.div_(sumexp[:, None])
    log_s = sumexp.log()
    entropy = log_s - ez / sumexp if ez is not None else None
    return e, Softmax(sumexp, zmax + log_s, entropy)
