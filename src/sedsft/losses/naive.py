"""Naive twins written straight from the formulas, with full ``[N, V]`` tensors and plain autograd.

Tests compare every path against these, and benchmarks measure them as the baselines. They share no
code with ``objectives.py``/``fused.py`` on purpose. ``sed_authors_style`` mimics the released SED-SFT
loss: it materialises the full softmax and a top-k over it on top of the logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _flatten(logits: Tensor, labels: Tensor, ignore_index: int):
    z = logits[:, :-1].reshape(-1, logits.shape[-1])  # [B*(T-1), V]
    y = labels[:, 1:].reshape(-1)
    keep = y != ignore_index
    return z[keep], y[keep]


def _reduce(per_token: Tensor, num_items_in_batch) -> Tensor:
    denom = num_items_in_batch if num_items_in_batch is not None else max(per_token.numel(), 1)
    return per_token.sum() / denom


def ce(logits, labels, *, num_items_in_batch=None, ignore_index=-100):
    z, y = _flatten(logits, labels, ignore_index)
    return F.cross_entropy(z, y, reduction="sum") / (num_items_in_batch or max(y.numel(), 1))


def dft(logits, labels, *, num_items_in_batch=None, ignore_index=-100):
    z, y = _flatten(logits, labels, ignore_index)
    logp = F.log_softmax(z, dim=-1).gather(1, y[:, None]).squeeze(1)
    return _reduce(-logp.exp().detach() * logp, num_items_in_batch)


def sed(logits, labels, *, tau, top_k=2, lam=1.0, num_items_in_batch=None, ignore_index=-100):
    z, y = _flatten(logits, labels, ignore_index)
    probs = F.softmax(z, dim=-1)  # [N, V]
    p = probs.gather(1, y[:, None]).squeeze(1)
    mask = (probs.topk(top_k, dim=-1).values.sum(-1) < tau).to(z.dtype).detach()
    return _reduce(-torch.log(p) + lam * mask * (p - 0.5) ** 2, num_items_in_batch)


def sed_nomask(logits, labels, *, top_k=2, lam=1.0, num_items_in_batch=None, ignore_index=-100):
    """SED-SFT without the mask, written out: the penalty at every token (``top_k`` is only logged elsewhere)."""
    z, y = _flatten(logits, labels, ignore_index)
    p = F.softmax(z, dim=-1).gather(1, y[:, None]).squeeze(1)
    return _reduce(-torch.log(p) + lam * (p - 0.5) ** 2, num_items_in_batch)


def gem(logits, labels, *, beta=0.7, h="linear", num_items_in_batch=None, ignore_index=-100):
    """GEM as its authors write it: -sum_v q_v w_v (log p - log pi_v), q and w without gradient."""
    z, y = _flatten(logits, labels, ignore_index)
    with torch.no_grad():
        q = F.softmax(z / beta, dim=-1)
        diff = z - z.gather(1, y[:, None])
        w = torch.ones_like(z) if h == "linear" else torch.sigmoid(0.01 * diff)
    logpi = F.log_softmax(z, dim=-1)
    logp = logpi.gather(1, y[:, None])
    return _reduce(-(q * w * (logp - logpi)).sum(-1), num_items_in_batch)


def sed_authors_style(z, y, *, tau, top_k=2, lam=1.0):
    """The released code's memory profile: log-softmax, full softmax and top-k, all materialised.

    Takes already-shifted, flat ``z`` [N, V] and ``y`` [N] (a benchmark baseline; the released code's own
    ``.contiguous()`` copy of the shifted logits is not counted).
    """
    logprobs = F.log_softmax(z.float(), dim=-1)  # [N, V]
    probs = logprobs.exp()  # [N, V] a second full copy
    topk_sum = probs.topk(top_k, dim=-1).values.sum(-1)
    mask = (topk_sum < tau).float()
    p = probs.gather(1, y[:, None]).squeeze(1)
    nll = -logprobs.gather(1, y[:, None]).squeeze(1)
    return (nll + lam * mask * (p - 0.5) ** 2).mean()


NAIVE = {"ce": ce, "dft": dft, "gem": gem, "sed": sed, "sed_nomask": sed_nomask}
