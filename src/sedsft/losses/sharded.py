"""The whole LM-head weight from a sharded parameter, for the loss only, with its gradient sent back to the shards.

Outside the module's own forward a sharded parameter holds only a piece of the weight:

- DeepSpeed ZeRO-3: ``param.data`` is empty (``ds_status`` NOT_AVAILABLE). The weight is all-gathered for
  the loss (:class:`_ZeroGathered`); the loss computes its weight gradient during its forward, and in
  backward the parameter is gathered again just while autograd accumulates that gradient into it, so
  ZeRO-3's own post-accumulate hook reduce-scatters it as it does for any parameter. Parameters that are
  already available (persistent small ones, a tied embedding still held) are used as they are.
- FSDP2 (``fully_shard``): the parameter is a DTensor sharded on dim 0 (when the module was resharded
  after forward). It is redistributed to a replicated tensor whose gradient is declared *partial* (a
  per-rank contribution): the backward reduce-scatters it into the shard, averaged over ranks as FSDP
  averages every other gradient. When FSDP keeps the root unsharded after forward, the model's own
  unsharded parameter is already a plain tensor and FSDP reduces its gradient itself.
- FSDP1 and DDP/ZeRO-1/2: the parameter seen after forward is the whole weight (for FSDP1, a view of the
  root unit's unsharded flat parameter, with ``use_orig_params=False``). FSDP1 with ``use_orig_params=True``
  or with the head in a unit of its own leaves a flat shard there, which is refused with a message.

A frozen parameter (``requires_grad=False``, e.g. under LoRA) comes back as a tensor that does not require
grad, so the engine allocates no weight gradient for it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def full_shape(param: Tensor) -> tuple[int, ...]:
    """The parameter's full shape, also when it is a ZeRO-3 partition (``ds_shape``) or a DTensor."""
    return tuple(getattr(param, "ds_shape", param.shape))


def _available(param: nn.Parameter) -> bool:
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    return param.ds_status == ZeroParamStatus.AVAILABLE


class _ZeroGathered(torch.autograd.Function):
    """Identity from a ZeRO-3 parameter to its whole value; the gradient goes to the parameter while gathered."""

    @staticmethod
    def forward(ctx, param):
        import deepspeed

        ctx.param = param
        if _available(param):  # persistent, or held by a module (tied embedding): use it, release nothing
            return param.data.detach()
        with deepspeed.zero.GatheredParameters([param]):  # read-only: no broadcast on exit
            # the gathered storage outlives the context (DeepSpeed only rebinds param.data on release)
            return param.data.detach()

    @staticmethod
    def backward(ctx, grad):
        param = ctx.param
        if not _available(param):
            param.all_gather()  # autograd writes param.grad next, which needs the full-size parameter

            def release(_param):  # after ZeRO-3's own hook (registered first) has taken the gradient
                handle.remove()
                if not param.ds_active_sub_modules:  # else the module using it releases it, as usual
                    param.partition()

            handle = param.register_post_accumulate_grad_hook(release)
        return grad


def _replicated(param: Tensor) -> Tensor:
    """A DTensor's full value; its gradient is reduce-scattered (averaged) into the shards in backward."""
    from torch.distributed.tensor import Partial, Replicate

    ndim = param.device_mesh.ndim
    full = param.redistribute(placements=[Replicate()] * ndim)
    return full.to_local(grad_placements=[Partial("avg")] * ndim)


def full_parameter(param: Tensor | None, *, dim: int, compute_dtype: torch.dtype) -> Tensor | None:
    """``param`` (a ``dim``-D weight or bias) as one plain tensor holding all of it, linked to ``param`` by autograd.

    ``compute_dtype`` (the hidden states' dtype) is what a DTensor shard is cast to once gathered: FSDP2's
    mixed precision keeps fp32 shards and computes in its param_dtype, as the model's own head would.
    """
    if param is None:
        return None
    if hasattr(param, "ds_id"):  # DeepSpeed ZeRO-3 (its parameters are already in the compute dtype)
        return _ZeroGathered.apply(param)
    if type(param).__name__ == "DTensor":  # FSDP2 / DTensor-sharded: gather in full precision, then cast
        return _replicated(param).to(compute_dtype)
    if param.numel() == 0 or param.dim() != dim:
        raise ValueError(flat_shard_message(param.shape))
    return param


def flat_shard_message(shape) -> str:
    return (
        f"the LM head's parameter is a flat shard of shape {tuple(shape)} (FSDP1 with use_orig_params=True, or "
        "the head in an FSDP1 unit of its own): use FSDP2, or FSDP1 with use_orig_params=false and the head in "
        "the root unit, or loss_impl='logits'"
    )
