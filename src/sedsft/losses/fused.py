"""The fused LM-head engine: every objective from ``hidden`` and the head weight, without ``[N, V]`` logits.

Tokens are processed in chunks of ``n`` rows. For one chunk the engine forms the ``[n, V]`` logits,
reads off the per-token statistics (gold logit, log-partition, top-k mass, GEM's weighted sum), asks
the objective for its per-token loss, and gets each token's coefficients by autograd over those
``[n]`` tensors. The logit gradient is then built in place in the same buffer,

    G = g_lse * softmax(z) + g_w * c + g_gold * onehot(y)        # [n, V]

and turned at once into the hidden and weight gradients (``G W`` and ``G^T h``). The gradient is thus
ready at the end of the forward pass: three matrix products in all, nothing recomputed. One ``[n, V]``
work buffer is allocated per call and reused by every chunk (two for GEM); accumulation is fp32 for
bf16/fp16 inputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor

from .logits import accumulation_dtype, check_labels, denominator, shift_and_keep, summarize
from .objectives import GEM_WEIGHTS, Objective, TokenTerms, get_objective
from .stats import BatchStats, LossOutput

_CPU_BUDGET_MB = 256  # work buffers per call on CPU; SEDSFT_FUSED_BUDGET_MB overrides
_GPU_BUDGET_FRACTION = 0.125  # of free device memory, at most 2 GiB
_GRAD_W_TILE_ROWS = 8192  # vocabulary rows per fp32 up-cast of a low-precision weight-gradient product


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


def _logits_into(buf: Tensor, h: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """z = h W^T + b written into the reused buffer ``buf`` [n, V] (accumulation dtype)."""
    if buf.dtype == weight.dtype:
        if bias is None:
            return torch.mm(h, weight.T, out=buf)
        return torch.addmm(bias, h, weight.T, out=buf)
    z = h @ weight.T  # [n, V] in bf16/fp16, then up-cast into the fp32 buffer
    if bias is not None:
        z += bias
    return buf.copy_(z)


def _exp_and_entropy(z: Tensor, want_entropy: bool) -> Tensor | None:
    """In place z -> exp(z); with ``want_entropy`` also returns sum_v exp(z_v) z_v per row.

    Row by row, so each row is exponentiated, dotted and written back while it is in cache: the
    statistic costs about one extra pass instead of the three that a separate entropy would.
    """
    if not want_entropy:
        z.exp_()
        return None
    ez = torch.empty(z.shape[0], dtype=z.dtype, device=z.device)
    row = torch.empty(z.shape[1], dtype=z.dtype, device=z.device)
    for r in range(z.shape[0]):
        torch.exp(z[r], out=row)
        ez[r] = torch.dot(row, z[r])
        z[r].copy_(row)
    return ez


def _chunk(h, weight, bias, y, plan: _Plan, inv_denom: Tensor, buf: Tensor, cbuf: Tensor | None):
    """Loss sum, statistics and the logit gradient (in ``buf``) for one chunk: h [n, d], y [n]."""
    obj, opts = plan.objective, plan.options
    z = _logits_into(buf, h, weight, bias)  # [n, V]
    gold = z.gather(1, y[:, None]).squeeze(1)  # [n]
    need_topk = plan.want_stats or obj.mask is not None
    if need_topk:
        top = z.topk(min(opts.top_k, z.shape[1]), dim=-1).values  # [n, k]
    else:
        top = z.amax(-1, keepdim=True)  # [n, 1]
    zmax = top[:, 0]

    c = weighted = weight_sum = None
    if obj.uses_gem_weights:  # GEM's target c = sg(softmax(z / beta) * w), before z is overwritten
        c = torch.sub(z, zmax[:, None], out=cbuf).div_(opts.beta).exp_()  # [n, V]
        c.div_(c.sum(-1, keepdim=True))
        w = GEM_WEIGHTS[opts.h](z, gold)
        if w is not None:
            c.mul_(w)
            del w
        weighted = torch.linalg.vecdot(c, z)  # [n]
        weight_sum = c.sum(-1)

    # softmax in place: z -> z - max -> exp -> probabilities
    z.sub_(zmax[:, None])
    ez = _exp_and_entropy(z, plan.want_stats)
    sumexp = z.sum(-1)
    z.div_(sumexp[:, None])
    probs = z
    lse = zmax + sumexp.log()  # [n]
    topk_mass = (top - lse[:, None]).exp().sum(-1) if need_topk else None

    # the objective on [n]-sized leaves; autograd gives d loss_t / d (gold, lse, weighted)
    with torch.enable_grad():
        leaves = [gold.detach().requires_grad_(), lse.detach().requires_grad_()]
        if weighted is not None:
            leaves.append(weighted.detach().requires_grad_())
        w_leaf = leaves[2] if weighted is not None else None
        terms = TokenTerms(leaves[0], leaves[1], topk_mass, w_leaf, weight_sum)
        per_token = obj.loss(terms, opts)  # [n]
        grads = torch.autograd.grad(per_token.sum(), leaves, allow_unused=True)
    g_gold, g_lse = grads[0], grads[1]
    g_w = grads[2] if weighted is not None else None

    stats = None
    if plan.want_stats:
        entropy = sumexp.log() - ez / sumexp  # H = log s - sum_v e_v z'_v / s, with z' = z - max
        measured = TokenTerms(gold, lse, topk_mass, weighted, weight_sum)
        stats = summarize(obj, opts, measured, entropy, gold >= zmax)

    # G = g_lse * P + g_w * c + g_gold * onehot(y), scaled by 1 / denominator, built in the P buffer
    grad_logits = probs
    if g_lse is not None:
        grad_logits.mul_((g_lse * inv_denom)[:, None])
    else:
        grad_logits.zero_()
    if c is not None and g_w is not None:
        grad_logits.add_(c.mul_((g_w * inv_denom)[:, None]))
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
        rows = min(plan.chunk_size, max(n_tok, 1))
        buf = torch.empty(rows, vocab, dtype=acc, device=h.device)  # the one [n, V] work buffer
        cbuf = torch.empty_like(buf) if plan.objective.uses_gem_weights else None
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device)  # accumulated in fp32
        grad_b = torch.zeros(vocab, dtype=acc, device=weight.device) if bias is not None else None
        loss = torch.zeros((), dtype=acc, device=h.device)
        stats = BatchStats.zeros(h.device)
        for start in range(0, n_tok, rows):
            sl = slice(start, start + rows)
            h_c = h[sl]
            n = h_c.shape[0]
            loss_c, stats_c, g = _chunk(
                h_c, weight, bias, y[sl], plan, inv_denom, buf[:n], cbuf[:n] if cbuf is not None else None
            )
            loss += loss_c
            if stats_c is not None:
                stats = stats + stats_c
            if bias is not None:
                grad_b += g.sum(0)
            if low_precision:
                g = g.to(weight.dtype)  # [n, V] half-size copy; products run in the input dtype
                torch.mm(g, weight, out=grad_h[sl])
                for v0 in range(0, vocab, _GRAD_W_TILE_ROWS):  # vocab tiles bound the fp32 up-cast
                    v1 = v0 + _GRAD_W_TILE_ROWS
                    grad_w[v0:v1] += (g[:, v0:v1].T @ h_c).to(acc)
            else:
                torch.mm(g, weight, out=grad_h[sl])
                grad_w.addmm_(g.T, h_c)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.weight_dtype = weight.dtype
        ctx.used = False
        stats_vec = stats.as_tensor()
        ctx.mark_non_differentiable(stats_vec)
        return loss * inv_denom, stats_vec

    @staticmethod
    def backward(ctx, grad_loss, _grad_stats):
        # The gradients were computed in forward; scale them in place (a [V, d] copy would double the
        # weight gradient's memory), so this graph can be backpropagated once.
        if ctx.used:
            raise RuntimeError(
                "fused_linear: backward through the same loss twice is not supported; recompute the loss"
            )
        ctx.used = True
        grad_h, grad_w, grad_b = ctx.saved_tensors
        grads = [g.mul_(grad_loss.to(g.dtype)) if g is not None else None for g in (grad_h, grad_w, grad_b)]
        grads[1:] = [g.to(ctx.weight_dtype) if g is not None else None for g in grads[1:]]
        return *grads, None, None, None


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
    buffers = 2 if obj.uses_gem_weights else 1
    rows = chunk_size or auto_chunk_size(h.shape[0], weight.shape[0], device=h.device, buffers=buffers)
    plan = _Plan(obj, opts, rows, return_stats)
    acc = accumulation_dtype(weight.dtype)
    inv_denom = 1.0 / denominator(num_items_in_batch, y.numel(), h.device, acc)
    loss, stats_vec = _FusedLinearObjective.apply(h, weight, bias, y, inv_denom, plan)
    if return_stats:
        return LossOutput(loss, BatchStats.from_tensor(stats_vec))
    return loss
