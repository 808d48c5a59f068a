"""The torch engine of the fused head: the CPU path, and the reference every GPU engine is checked against.

It processes ``n`` rows at a time: it forms the chunk's logits in a reused buffer, reads the statistics
(:mod:`.chunk`), builds G (:mod:`.plan`) in place and turns it at once into the hidden and weight gradients
(``G W`` and ``G^T h``): the gradient is ready at the end of forward, three matrix products in all,
nothing recomputed. Gradients are accumulated in fp32 for bf16/fp16 inputs, and only those that are
needed are computed (a frozen head allocates no ``[V, d]`` gradient).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from .chunk import entropy_scratch, logits_into, softmax_in_place, top_and_gold
from .logits import summarize
from .objectives import GEM_WEIGHTS, TokenTerms
from .plan import Plan, add_product, token_coefficients
from .stats import BatchStats

_CPU_BUDGET_MB = 256  # work buffers per call on CPU; SEDSFT_FUSED_BUDGET_MB overrides
_GPU_BUDGET_MB = 1024  # on CUDA: fixed, so the chunk size does not follow free memory


def auto_chunk_size(
    num_tokens: int, vocab_size: int, *, device: torch.device, buffers: int = 2, element_bytes: int = 4
) -> int:
    """Rows per chunk so that ``buffers`` ``[n, V]`` tiles (fp32 unless told) fit the work budget (fixed per device type)."""
    env = os.environ.get("SEDSFT_FUSED_BUDGET_MB")
    mb = float(env) if env else (_GPU_BUDGET_MB if device.type == "cuda" else _CPU_BUDGET_MB)
    rows = int(mb * 2**20 // (buffers * vocab_size * element_bytes))
    return max(1, min(rows, max(num_tokens, 1)))


def _gem_target(z: Tensor, gold: Tensor, zmax: Tensor, opts, out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """GEM's c = sg(softmax(z / beta) * w) in ``out`` [n, V], with sum_v c_v z_v and sum_v c_v ([n] each)."""
    c = torch.sub(z, zmax[:, None], out=out).div_(opts.beta).exp_()  # [n, V]
    c.div_(c.sum(-1, keepdim=True))
    w = GEM_WEIGHTS[opts.h](z, gold)
    if w is not None:
        c.mul_(w)
        del w
    return c, torch.einsum("nv,nv->n", c, z), c.sum(-1)


def _chunk(h, weight, bias, y, plan: Plan, bufs: dict):
    """Loss sum, statistics and (when a gradient is needed) the logit gradient G in a buffer, for h [n, d]."""
    obj, opts = plan.objective, plan.options
    z = logits_into(bufs["z"], h, weight, bias)  # [n, V]
    top = top_and_gold(z, y, top_k=plan.top_k)
    c = weighted = weight_sum = None
    if obj.uses_gem_weights:  # before z is consumed by the softmax
        c, weighted, weight_sum = _gem_target(z, top.gold, top.max, opts, bufs["c"])
    probs, soft = softmax_in_place(z, top.max, scratch=bufs.get("e"))
    topk_mass = (top.values - soft.lse[:, None]).exp().sum(-1) if plan.top_k else None  # [n]
    terms = TokenTerms(top.gold, soft.lse, topk_mass, weighted, weight_sum)
    per_token, coef = token_coefficients(obj, opts, terms)
    stats = summarize(obj, opts, terms, soft.entropy, top.gold >= top.max) if plan.want_stats else None
    if not any(plan.needs):
        return per_token.sum(), stats, None
    coef = coef.scaled(plan.inv_denom)
    # G = g_lse * P + g_w * c + g_gold * onehot(y), built in the probabilities' buffer
    grad_logits = probs.mul_(coef.lse[:, None]) if coef.lse is not None else probs.zero_()
    if c is not None and coef.weighted is not None:
        grad_logits.add_(c.mul_(coef.weighted[:, None]))
    if coef.gold is not None:
        grad_logits[torch.arange(y.numel(), device=y.device), y] += coef.gold
    return per_token.sum(), stats, grad_logits


class TorchFusedLinear(torch.autograd.Function):
    """loss = sum_t objective_t(h_t W^T + b) / denominator, with the gradient computed in forward."""

    @staticmethod
    def forward(ctx, h, weight, bias, plan: Plan):
        n_tok, vocab = h.shape[0], weight.shape[0]
        acc = plan.inv_denom.dtype  # fp32, or fp64 for fp64 inputs
        need_h, need_w, need_b = plan.needs
        rows = min(plan.chunk_size, max(n_tok, 1))
        bufs = {"z": torch.empty(rows, vocab, dtype=acc, device=h.device)}  # the reused [n, V] buffers
        if plan.want_stats:
            bufs["e"] = entropy_scratch(bufs["z"])  # [max(64, n/8), V]
        if plan.objective.uses_gem_weights:
            bufs["c"] = torch.empty_like(bufs["z"])
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None  # fp32 sum
        grad_b = torch.zeros(vocab, dtype=acc, device=weight.device) if need_b else None
        loss = torch.zeros((), dtype=acc, device=h.device)
        stats = BatchStats.zeros(h.device)
        for start in range(0, n_tok, rows):
            sl = slice(start, start + rows)
            h_c = h[sl]
            n = h_c.shape[0]
            loss_c, stats_c, g = _chunk(
                h_c, weight, bias, plan.y[sl], plan, {k: b[:n] for k, b in bufs.items()}
            )
            loss += loss_c
            if stats_c is not None:
                stats = stats + stats_c
            if g is None:
                continue
            if grad_b is not None:
                grad_b += g.sum(0)
            g_low = g.to(weight.dtype) if weight.dtype != acc else g  # [n, V] half-size copy for the products
            if grad_w is not None:
                add_product(grad_w, (g_low if grad_w.is_cuda else g).T, h_c)  # CPU: the fp32 G as it is
            if grad_h is not None:
                torch.mm(g_low, weight, out=grad_h[sl])  # each row complete: rounded once
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.weight_dtype = weight.dtype
        ctx.used = False
        stats_vec = stats.as_tensor()
        ctx.mark_non_differentiable(stats_vec)
        return loss * plan.inv_denom, stats_vec

    @staticmethod
    def backward(ctx, grad_loss, _grad_stats):
        # The gradients were computed in forward; scale them in place (a [V, d] copy would double the
        # weight gradient's memory), so this graph can be backpropagated once.
        if ctx.used:
            raise RuntimeError(
                "fused_linear: backward through the same loss twice is not supported; recompute the loss"
            )
        ctx.used = True
        grad_h, grad_w, grad_b = (
            g.mul_(grad_loss.to(g.dtype)) if g is not None else None for g in ctx.saved_tensors
        )
        grad_w, grad_b = (g.to(ctx.weight_dtype) if g is not None else None for g in (grad_w, grad_b))
        return grad_h, grad_w, grad_b, None
