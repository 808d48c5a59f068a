"""The fused LM-head engine: every objective from ``hidden`` and the head weight, without ``[N, V]`` logits.

Tokens are processed in chunks of ``n`` rows. For one chunk the engine forms the ``[n, V]`` logits,
reads off the per-token statistics (gold logit, log-partition, top-k mass, GEM's weighted sum), asks
the objective for its per-token loss, and gets each token's coefficients by autograd over those
``[n]`` tensors. The logit gradient is then built in place in the same buffer,

    G = g_lse * softmax(z) + g_w * c + g_gold * onehot(y)        # [n, V]

and turned at once into the hidden and weight gradients (``G W`` and ``G^T h``). The gradient is thus
ready at the end of the forward pass: three matrix products in all, nothing recomputed, and at most
two ``[n, V]`` fp32 buffers alive at a time (three for GEM). Accumulation is fp32 for bf16/fp16 inputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor

from .logits import accumulation_dtype, check_labels, denominator, shift_and_keep
from .objectives import GEM_WEIGHTS, Objective, TokenTerms, get_objective
from .stats import BatchStats, LossOutput

_CPU_BUDGET_MB = 256  # work buffers per chunk on CPU; SEDSFT_FUSED_BUDGET_MB overrides
_GPU_BUDGET_FRACTION = 0.125  # of free device memory, at most 2 GiB
_ENTROPY_ROWS = 32  # rows per block when measuring entropy, to bound its temporary


def auto_chunk_size(num_tokens: int, vocab_size: int, *, device: torch.device, buffers: int = 2) -> int:
    """Rows per chunk so that ``buffers`` fp32 ``[n, V]`` tiles fit the work budget."""
    env = os.environ.get("SEDSFT_FUSED_BUDGET_MB")
    if env:
        budget = float(env) * 2**20
    elif device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = min(free * _GPU_BUDGET_FRACTION, 2 * 2**30)
    else:
        budget = _CPU_BUDGET_MB * 2**20
    rows = int(budget // (buffers * vocab_size * 4))
    return max(1, min(rows, max(num_tokens, 1)))


@dataclass(frozen=True)
class _Plan:
    """Everything the engine needs besides tensors (one non-tensor argument to the autograd Function)."""

    objective: Objective
    options: object
    chunk_size: int
    want_stats: bool


def _chunk(h: Tensor, weight: Tensor, bias: Tensor | None, y: Tensor, plan: _Plan, inv_denom: Tensor):
    """Loss sum, statistics and gradient pieces for one chunk: h [n, d], y [n]."""
    obj, opts = plan.objective, plan.options
    z = h @ weight.T  # [n, V] in the input dtype
    if bias is not None:
        z += bias
    z = z.to(inv_denom.dtype)  # fp32 (fp64 for fp64 inputs) from here on; no copy when already so
    gold = z.gather(1, y[:, None]).squeeze(1)  # [n]
    need_topk = plan.want_stats or obj.mask is not None
    top = (
        z.topk(min(opts.top_k, z.shape[1]), dim=-1).values if need_topk else z.amax(-1, keepdim=True)
    )  # [n, k]
    zmax = top[:, 0]

    c = weighted = weight_sum = None
    if obj.uses_gem_weights:  # GEM's target c = sg(softmax(z / beta) * w), needed before z is overwritten
        c = z.sub(zmax[:, None]).div_(opts.beta).exp_()  # [n, V] second buffer
        c.div_(c.sum(-1, keepdim=True))
        w = GEM_WEIGHTS[opts.h](z, gold)
        if w is not None:
            c.mul_(w)
            del w
        weighted = torch.linalg.vecdot(c, z)  # [n]
        weight_sum = c.sum(-1)

    # softmax in place: z -> exp(z - max) -> probabilities P
    z.sub_(zmax[:, None]).exp_()
    sumexp = z.sum(-1)
    z.div_(sumexp[:, None])
    probs = z
    lse = zmax + sumexp.log()  # [n]
    topk_mass = (top - lse[:, None]).exp().sum(-1) if need_topk else None

    # the objective, on [n]-sized leaves; autograd gives d loss_t / d (gold, lse, weighted)
    with torch.enable_grad():
        leaves = [gold.detach().requires_grad_(), lse.detach().requires_grad_()]
        if weighted is not None:
            leaves.append(weighted.detach().requires_grad_())
        terms = TokenTerms(
            leaves[0], leaves[1], topk_mass, leaves[2] if weighted is not None else None, weight_sum
        )
        per_token = obj.loss(terms, opts)  # [n]
        grads = torch.autograd.grad(per_token.sum(), leaves, allow_unused=True)
    g_gold, g_lse = grads[0], grads[1]
    g_w = grads[2] if weighted is not None else None

    stats = None
    if plan.want_stats:
        entropy = torch.empty_like(lse)
        for r in range(0, probs.shape[0], _ENTROPY_ROWS):  # bounded temporary
            entropy[r : r + _ENTROPY_ROWS] = torch.special.entr(probs[r : r + _ENTROPY_ROWS]).sum(-1)
        f64 = torch.float64
        detached = TokenTerms(gold, lse, topk_mass, weighted, weight_sum)
        zero = torch.zeros((), dtype=f64, device=z.device)
        stats = BatchStats(
            tokens=torch.tensor(float(y.numel()), dtype=f64, device=z.device),
            masked=obj.mask(detached, opts).sum().to(f64) if obj.mask else zero,
            penalty=obj.penalty(detached, opts).sum().to(f64) if obj.penalty else zero,
            prob=(gold - lse).exp().sum().to(f64),
            entropy=entropy.sum().to(f64),
            topk_mass=topk_mass.sum().to(f64),
            correct=(gold >= zmax).sum().to(f64),
        )

    # G = g_lse * P + g_w * c + g_gold * onehot(y), scaled by 1 / denominator, built in the P buffer
    grad_logits = probs
    if g_lse is not None:
        grad_logits.mul_((g_lse * inv_denom)[:, None])
    else:
        grad_logits.zero_()
    if c is not None and g_w is not None:
        grad_logits.add_(c.mul_((g_w * inv_denom)[:, None]))
        del c
    if g_gold is not None:
        grad_logits[torch.arange(y.numel(), device=y.device), y] += g_gold * inv_denom
    return per_token.detach().sum(), stats, grad_logits


class _FusedLinearObjective(torch.autograd.Function):
    """loss = sum_t objective_t(h_t W^T + b) / denominator, with the gradient computed in forward."""

    @staticmethod
    def forward(ctx, h, weight, bias, y, inv_denom, plan: _Plan):
        n_tok, vocab = h.shape[0], weight.shape[0]
        acc = inv_denom.dtype  # fp32, or fp64 for fp64 inputs
        low_precision = weight.dtype != acc
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device)  # accumulated in fp32
        grad_b = torch.zeros(vocab, dtype=acc, device=weight.device) if bias is not None else None
        loss = torch.zeros((), dtype=acc, device=h.device)
        stats = BatchStats.zeros(h.device)
        for start in range(0, n_tok, plan.chunk_size):
            sl = slice(start, start + plan.chunk_size)
            h_c = h[sl]
            loss_c, stats_c, g = _chunk(h_c, weight, bias, y[sl], plan, inv_denom)
            loss += loss_c
            if stats_c is not None:
                stats = stats + stats_c
            if bias is not None:
                grad_b += g.sum(0)
            if low_precision:
                g = g.to(weight.dtype)  # [n, V] half-size copy; products run in the input dtype
                grad_h[sl] = g @ weight
                for v0 in range(0, vocab, plan.chunk_size * 8):  # vocab tiles bound the fp32 upcast
                    v1 = v0 + plan.chunk_size * 8
                    grad_w[v0:v1] += (g[:, v0:v1].T @ h_c).to(acc)
            else:
                torch.mm(g, weight, out=grad_h[sl])
                grad_w.addmm_(g.T, h_c)
            del g
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.weight_dtype = weight.dtype
        stats_vec = stats.as_tensor()
        ctx.mark_non_differentiable(stats_vec)
        return loss * inv_denom, stats_vec

    @staticmethod
    def backward(ctx, grad_loss, _grad_stats):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        grad_h = grad_h * grad_loss.to(grad_h.dtype)
        grad_w = (grad_w * grad_loss).to(ctx.weight_dtype)
        if grad_b is not None:
            grad_b = (grad_b * grad_loss).to(ctx.weight_dtype)
        return grad_h, grad_w, grad_b, None, None, None


def fused_linear(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    *,
    objective: str,
    bias: Tensor | None = None,
    num_items_in_batch=None,
    ignore_index: int = -100,
    chunk_size: int | None = None,
    return_stats: bool = False,
    **objective_options,
) -> Tensor | LossOutput:
    """Any registered objective applied to ``hidden @ weight.T + bias``, without materialising the logits.

    Same value and gradients (w.r.t. ``hidden``, ``weight`` and ``bias``) as
    ``sedsft.losses.<objective>(hidden @ weight.T + bias, labels, ...)``. ``hidden`` is ``[B, T, d]``,
    ``labels`` ``[B, T]`` unshifted; only positions whose next label is kept are scored.
    ``chunk_size`` (rows per chunk) defaults to a size whose work buffers fit a memory budget.
    """
    obj = get_objective(objective)
    opts = obj.options(**objective_options)
    if hidden.dim() != 3 or hidden.shape[:2] != labels.shape:
        raise ValueError(
            f"hidden must be [B, T, d] and labels [B, T]; got {tuple(hidden.shape)} and {tuple(labels.shape)}"
        )
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight must be [V, {hidden.shape[-1]}], got {tuple(weight.shape)}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must be [{weight.shape[0]}], got {tuple(bias.shape)}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    kept, y = shift_and_keep(labels, ignore_index=ignore_index)
    check_labels(y, weight.shape[0], ignore_index=ignore_index)
    h = hidden[:, :-1][kept]  # [N, d]: only scored rows enter the engine
    if h.dtype != weight.dtype:
        h = h.to(weight.dtype)
    buffers = 3 if obj.uses_gem_weights else 2
    rows = chunk_size or auto_chunk_size(h.shape[0], weight.shape[0], device=h.device, buffers=buffers)
    plan = _Plan(obj, opts, rows, return_stats)
    acc = accumulation_dtype(weight.dtype)
    inv_denom = 1.0 / denominator(num_items_in_batch, y.numel(), h.device, acc)
    loss, stats_vec = _FusedLinearObjective.apply(h, weight, bias, y, inv_denom, plan)
    if return_stats:
        return LossOutput(loss, BatchStats.from_tensor(stats_vec))
    return loss
