"""The fused LM-head engine's entry point: every objective from ``hidden`` and the head weight, no ``[N, V]`` logits.

One entry point, three engines behind ``impl=``, siblings that share :mod:`.plan` (the call's plan and the
objective's per-token coefficients):

- ``"torch"`` (:mod:`.torch_engine`): plain PyTorch, the CPU path and the reference;
- ``"chunked"`` (:mod:`.chunked_engine`): GPU, speed: cuBLAS logits per token chunk, Triton row statistics;
- ``"recompute"`` (:mod:`.recompute_engine`): GPU, memory: no logits buffer, tiles recomputed;
- ``"triton"``: the best Triton engine for the call (chunked, else recompute), never torch;
- ``"auto"``: on CUDA chunked when its chunk buffer fits the memory budget, else recompute, else torch,
  each GPU engine only where every kernel has a configuration that fits the device (registers, shared
  memory per block, no spills: :func:`.launch.chosen`); torch elsewhere. A fallback for want of device
  resources says so once per process in a one-line warning.

Under ``TRITON_INTERPRET=1`` the GPU engines run on CPU tensors in Triton's interpreter (the tests).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from . import chunked_engine, launch, recompute_engine
from .logits import accumulation_dtype, denominator, scored_rows
from .objectives import get_objective
from .plan import Plan
from .stats import BatchStats, LossOutput
from .torch_engine import TorchFusedLinear, auto_chunk_size

IMPLS = ("auto", "torch", "chunked", "recompute", "triton")
GPU_ENGINES = {"chunked": chunked_engine, "recompute": recompute_engine}


@dataclass(frozen=True)
class Choice:
    """The engine a call runs on, with what it needs: the kernels' launches (GPU engines), rows per chunk."""

    impl: str  # "torch", "chunked" or "recompute"
    launches: dict | None = None
    chunk_size: int | None = None


def select(
    impl: str,
    device: torch.device,
    dtype: torch.dtype,
    *,
    objective: str = "ce",
    top_k: int | None = None,
    frozen_head: bool = False,
    n_rows: int = 0,
    d: int = 1,
    vocab: int = 1,
    chunk_size: int | None = None,
) -> Choice:
    """The engine for ``impl`` and this call (module docstring); ValueError if a named one cannot run."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "torch" or (impl == "auto" and device.type != "cuda"):
        return Choice("torch")
    why_not = launch.unsupported(device, dtype, top_k=top_k or 1)
    if why_not is not None:
        if impl == "auto":
            return Choice("torch")
        raise ValueError(f"impl={impl!r} cannot run here: {why_not}; use impl='torch' or 'auto'")
    call = dict(dtype=dtype, objective=objective, top_k=top_k, frozen_head=frozen_head, d=d, vocab=vocab)
    names = ("chunked", "recompute") if impl in ("auto", "triton") else (impl,)
    reasons = []
    for name in names:
        rows = None
        if name == "chunked":
            rows = chunk_size or chunked_engine.chunk_rows(n_rows, vocab, dtype, device)
            thin = not chunked_engine.fits_budget(n_rows, vocab, dtype, device)
            if thin and chunk_size is None and impl != "chunked":
                continue  # the buffer would be too thin for the budget: recompute, a choice (no notice)
        picks = GPU_ENGINES[name].launches(device, **call)  # None: some kernel fits no configuration
        if picks is not None:
            return Choice(name, picks, rows)
        reasons.append(f"no configuration of the {name} engine's kernels fits sm_{_arch(device)}")
    if impl == "auto":
        _notice(f"sedsft fused_linear: {'; '.join(reasons)}; using the torch engine")
        return Choice("torch")
    raise ValueError(f"impl={impl!r} cannot run here: {'; '.join(reasons)}; use impl='torch' or 'auto'")


def _arch(device: torch.device) -> int:
    return launch.device_limits(device).arch


_NOTICES: set[str] = set()


def _notice(message: str) -> None:
    if message not in _NOTICES:  # once per process
        _NOTICES.add(message)
        warnings.warn(message, stacklevel=3)


def resolve_impl(impl: str, device: torch.device, dtype: torch.dtype, *, top_k: int = 1, **call) -> str:
    """The engine's name ("torch", "chunked" or "recompute") for ``impl`` and such a call (:func:`select`)."""
    return select(impl, device, dtype, top_k=top_k, **call).impl


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
    ``labels`` ``[B, T]`` unshifted; only positions whose next label is kept are scored. ``impl``: one of
    ``IMPLS`` (see the module docstring). ``chunk_size`` (torch and chunked engines: rows per chunk)
    defaults to a size whose work buffers fit a fixed memory budget (``SEDSFT_FUSED_BUDGET_MB``).
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
    idx, y = scored_rows(labels, vocab_size=weight.shape[0], ignore_index=ignore_index)  # the one host sync
    h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, idx)  # [N, d]: only scored rows enter the engine
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
    choice = select(
        impl, h.device, h.dtype, objective=objective, top_k=plan.top_k, frozen_head=not needs[1],
        n_rows=h.shape[0], d=h.shape[1], vocab=weight.shape[0], chunk_size=chunk_size,
    )  # fmt: skip
    if choice.impl == "chunked":
        plan = replace(plan, launches=choice.launches, chunk_size=choice.chunk_size)
        loss, stats_vec = chunked_engine.ChunkedFusedLinear.apply(h, weight, bias, plan)
    elif choice.impl == "recompute":
        plan = replace(plan, launches=choice.launches)
        loss, stats_vec = recompute_engine.RecomputeFusedLinear.apply(h, weight, bias, plan)
    else:
        buffers = 1 + obj.uses_gem_weights  # (the entropy adds a scratch of at most ~1/8 buffer)
        rows = chunk_size or auto_chunk_size(h.shape[0], weight.shape[0], device=h.device, buffers=buffers)
        plan = replace(plan, chunk_size=rows)
        loss, stats_vec = TorchFusedLinear.apply(h, weight, bias, plan)
    if return_stats:
        return LossOutput(loss, BatchStats.from_tensor(stats_vec))
    return loss
