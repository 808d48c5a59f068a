"""The fused LM-head engine's entry point: every objective from ``hidden`` and the head weight, no ``[N, V]`` logits.

One entry point, several engines behind ``impl=``, siblings that share :mod:`.plan` (the call's plan and
the objective's per-token coefficients):

- ``"torch"`` (:mod:`.torch_engine`): plain PyTorch, the CPU path and the reference;
- ``"triton"`` (:mod:`.triton_engine`): Triton kernels for CUDA tensors;
- ``"auto"``: Triton on CUDA where it can run, torch elsewhere.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from .logits import accumulation_dtype, check_labels, denominator, shift_and_keep
from .objectives import get_objective
from .plan import Plan
from .stats import BatchStats, LossOutput
from .torch_engine import TorchFusedLinear, auto_chunk_size

IMPLS = ("auto", "torch", "triton")


def resolve_impl(impl: str, device: torch.device, dtype: torch.dtype, *, top_k: int = 1) -> str:
    """``"torch"`` or ``"triton"`` for inputs on ``device`` in ``dtype``; ``"auto"`` picks Triton on CUDA."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "torch" or (impl == "auto" and device.type != "cuda"):
        return "torch"
    from .launch import unsupported

    why_not = unsupported(device, dtype, top_k=top_k)
    if why_not is None:
        return "triton"
    if impl == "auto":
        return "torch"
    raise ValueError(f"impl='triton' cannot run here: {why_not}; use impl='torch' or 'auto'")


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
        loss, stats_vec = TorchFusedLinear.apply(h, weight, bias, plan)
    if return_stats:
        return LossOutput(loss, BatchStats.from_tensor(stats_vec))
    return loss
