"""The fused LM-head engine: every objective from ``hidden`` and the head weight, without ``[N, V]`` logits.

One entry point, two implementations (``impl=``): ``"triton"`` (GPU kernels, :mod:`.triton_engine`),
``"torch"`` (plain PyTorch, below; the CPU path and the reference), ``"auto"`` = Triton on CUDA, torch
elsewhere. Both read the same per-token statistics (gold logit, log-partition, top-k mass, GEM's
tempered sums), ask the objective for its per-token loss over those ``[N]`` tensors, and get each
token's coefficients by autograd over them (:func:`token_coefficients`). The logit gradient is then

    G = g_lse * softmax(z) + g_w * c + g_gold * onehot(y)        # [n, V]

The torch path processes ``n`` rows at a time: it forms the chunk's logits in a reused buffer, reads the
statistics (:mod:`.chunk`), builds G in place and turns it at once into the hidden and weight gradients
(``G W`` and ``G^T h``): the gradient is ready at the end of forward, three matrix products in all,
nothing recomputed. Gradients are accumulated in fp32 for bf16/fp16 inputs, and only those that are
needed are computed (a frozen head allocates no ``[V, d]`` gradient).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .chunk import entropy_scratch, logits_into, softmax_in_place, top_and_gold
from .logits import accumulation_dtype, check_labels, denominator, shift_and_keep, summarize
from .objectives import GEM_WEIGHTS, Objective, TokenTerms, get_objective
from .stats import BatchStats, LossOutput

IMPLS = ("auto", "torch", "triton")
_CPU_BUDGET_MB = 256  # torch path: work buffers per call on CPU; SEDSFT_FUSED_BUDGET_MB overrides
_GPU_BUDGET_MB = 1024  # torch path on CUDA: fixed, so the chunk size does not follow free memory
_ADDMM_OUT_DTYPE = torch.torch_version.TorchVersion(torch.__version__) >= "2.8"  # addmm(out_dtype=), CUDA


def auto_chunk_size(num_tokens: int, vocab_size: int, *, device: torch.device, buffers: int = 2) -> int:
    """Rows per chunk so that ``buffers`` fp32 ``[n, V]`` tiles fit the work budget (fixed per device type)."""
    env = os.environ.get("SEDSFT_FUSED_BUDGET_MB")
    mb = float(env) if env else (_GPU_BUDGET_MB if device.type == "cuda" else _CPU_BUDGET_MB)
    rows = int(mb * 2**20 // (buffers * vocab_size * 4))
    return max(1, min(rows, max(num_tokens, 1)))


def resolve_impl(impl: str, device: torch.device, dtype: torch.dtype, *, top_k: int = 1) -> str:
    """``"torch"`` or ``"triton"`` for inputs on ``device`` in ``dtype``; ``"auto"`` picks Triton on CUDA."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "torch" or (impl == "auto" and device.type != "cuda"):
        return "torch"
    from . import triton_engine

    why_not = triton_engine.unsupported(device, dtype, top_k=top_k)
    if why_not is None:
        return "triton"
    if impl == "auto":
        return "torch"
    raise ValueError(f"impl='triton' cannot run here: {why_not}; use impl='torch' or 'auto'")


# ---- the objective's coefficients, shared by both implementations -----------------------------------


@dataclass
class Coefficients:
    """d loss_t / d (gold, lse, weighted) per token, [N] each; None where the objective does not use it."""

    gold: Tensor | None
    lse: Tensor | None
    weighted: Tensor | None

    def scaled(self, s: Tensor) -> Coefficients:
        return Coefficients(*(g * s if g is not None else None for g in (self.gold, self.lse, self.weighted)))


def token_coefficients(obj: Objective, opts, terms: TokenTerms) -> tuple[Tensor, Coefficients]:
    """The objective's per-token loss [N] (detached) and, by autograd over ``[N]`` leaves, its coefficients."""
    with torch.enable_grad():
        gold = terms.gold.detach().requires_grad_()
        lse = terms.lse.detach().requires_grad_()
        weighted = terms.weighted.detach().requires_grad_() if terms.weighted is not None else None
        per_token = obj.loss(TokenTerms(gold, lse, terms.topk_mass, weighted, terms.weight_sum), opts)  # [N]
        leaves = [gold, lse] + ([weighted] if weighted is not None else [])
        grads = torch.autograd.grad(per_token.sum(), leaves, allow_unused=True)
    return per_token.detach(), Coefficients(grads[0], grads[1], grads[2] if weighted is not None else None)


@dataclass(frozen=True)
class Plan:
    """Everything the engine needs besides the differentiable tensors (one argument to the autograd Function)."""

    objective: Objective
    options: object
    y: Tensor  # [N] gold ids of the scored rows
    inv_denom: Tensor  # 0-dim, 1 / the reduction's denominator (accumulation dtype)
    want_stats: bool
    needs: tuple[bool, bool, bool]  # which of grad_h, grad_w, grad_b to compute
    chunk_size: int | None = None  # torch path: rows per chunk

    @property
    def top_k(self) -> int | None:
        """k of the top-k mass when it is needed (SED's mask, or logging), else None."""
        return self.options.top_k if (self.want_stats or self.objective.mask is not None) else None


# ---- the torch implementation ---------------------------------------------------------------------


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


def _add_weight_grad(grad_w: Tensor, g: Tensor, g_low: Tensor, h: Tensor) -> None:
    """grad_w += G^T h, summed in the accumulator's dtype: no chunk's product is rounded to bf16 first."""
    if g_low is g:  # fp32 / fp64 inputs
        grad_w.addmm_(g.T, h)
    elif grad_w.is_cuda and _ADDMM_OUT_DTYPE:  # bf16 tensor cores, fp32 output
        torch.addmm(grad_w, g_low.T, h, out_dtype=grad_w.dtype, out=grad_w)
    else:  # CPU: the fp32 gradient buffer times an fp32 copy of the chunk's rows [n, d]
        grad_w.addmm_(g.T, h.to(grad_w.dtype))


class _TorchFusedLinear(torch.autograd.Function):
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
                _add_weight_grad(grad_w, g, g_low, h_c)
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


# ---- the entry point ------------------------------------------------------------------------------


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
    impl: str = "auto",
    **objective_options,
) -> Tensor | LossOutput:
    """Any registered objective applied to ``hidden @ weight.T + bias``, without materialising the logits.

    Same value and gradients (w.r.t. ``hidden``, ``weight`` and ``bias``) as
    ``sedsft.losses.<objective>(hidden @ weight.T + bias, labels, ...)``. ``hidden`` is ``[B, T, d]``,
    ``labels`` ``[B, T]`` unshifted; only positions whose next label is kept are scored. ``impl``:
    "auto" (Triton on CUDA, torch elsewhere), "triton" or "torch". ``chunk_size`` (torch path: rows per
    chunk) defaults to a size whose work buffers fit a fixed memory budget.
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
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    kept, y = shift_and_keep(labels, ignore_index=ignore_index)
    check_labels(y, weight.shape[0], ignore_index=ignore_index)
    h = hidden[:, :-1][kept]  # [N, d]: only scored rows enter the engine
    if h.dtype != weight.dtype:
        h = h.to(weight.dtype)
    acc = accumulation_dtype(weight.dtype)
    grad_on = torch.is_grad_enabled()
    needs = (
        grad_on and h.requires_grad,
        grad_on and weight.requires_grad,
        grad_on and bias is not None and bias.requires_grad,
    )
    plan = Plan(
        obj,
        opts,
        y,
        1.0 / denominator(num_items_in_batch, y.numel(), h.device, acc),
        return_stats,
        needs,
    )
    if resolve_impl(impl, h.device, h.dtype, top_k=opts.top_k) == "triton":
        from .triton_engine import TritonFusedLinear

        loss, stats_vec = TritonFusedLinear.apply(h, weight, bias, plan)
    else:
        buffers = 1 + obj.uses_gem_weights  # (the entropy adds a scratch of at most ~1/8 buffer)
        rows = chunk_size or auto_chunk_size(h.shape[0], weight.shape[0], device=h.device, buffers=buffers)
        plan = replace(plan, chunk_size=rows)
        loss, stats_vec = _TorchFusedLinear.apply(h, weight, bias, plan)
    if return_stats:
        return LossOutput(loss, BatchStats.from_tensor(stats_vec))
    return loss
