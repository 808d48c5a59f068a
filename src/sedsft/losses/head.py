"""Run a Transformers causal LM's backbone and hand its last hidden states and LM head to ``fused_linear``.

No ``forward`` is patched: the model (possibly wrapped by DDP, DeepSpeed or FSDP) runs its own forward
with ``logits_to_keep=1``, so it projects a single position, and returns the final hidden states; the
loss then owns the full LM-head projection. A head weight sharded outside ``forward`` (ZeRO-3, FSDP2) is
gathered for the loss only and its gradient goes back to the shards (:mod:`.sharded`). Heads this engine
cannot reproduce (logit soft-capping, logit scaling, non-linear heads, a LoRA adapter on the head) are
rejected with a message, for which the logits path must be used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .sharded import flat_shard_message, full_parameter, full_shape


@dataclass
class HeadInputs:
    hidden: Tensor  # [B, T, d] final (post-norm) hidden states
    weight: Tensor  # [V, d] LM-head weight (the embedding matrix when tied)
    bias: Tensor | None  # [V] or None


def unwrap(model: nn.Module) -> nn.Module:
    """The Transformers model inside DDP / DeepSpeed / torch.compile / PEFT wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP, DeepSpeed engine
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif hasattr(model, "get_base_model") and callable(model.get_base_model):  # PEFT
            base = model.get_base_model()
            if base is model:
                return model
            model = base
        else:
            return model


def check_fusable(model: nn.Module) -> nn.Linear:
    """The model's LM head if the fused path reproduces it exactly; otherwise a clear error."""
    inner = unwrap(model)
    cfg = getattr(inner, "config", None)
    for attr in ("final_logit_softcapping", "logit_softcapping"):
        if getattr(cfg, attr, None):
            raise ValueError(
                f"{type(inner).__name__} uses {attr}={getattr(cfg, attr)}; the fused head does not support "
                "soft-capped logits: use loss_impl='logits'"
            )
    if getattr(cfg, "logit_scale", None) not in (None, 1, 1.0):
        raise ValueError(
            f"{type(inner).__name__} scales its logits (logit_scale={cfg.logit_scale}); use loss_impl='logits'"
        )
    head = _output_head(inner)
    w = getattr(head, "weight", None)  # FSDP1 without use_orig_params shows it only inside forward
    if w is not None and (len(full_shape(w)) != 2 or 0 in full_shape(w)):
        raise ValueError(flat_shard_message(full_shape(w)))
    return head


def _output_head(inner: nn.Module) -> nn.Linear:
    """The module that projects hidden states to logits: a plain ``nn.Linear`` (PEFT's trainable copy of it
    under ``modules_to_save``); a LoRA adapter or a custom head is refused."""
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if hasattr(head, "modules_to_save") and hasattr(head, "active_adapters"):  # PEFT ModulesToSaveWrapper
        active = [a for a in head.active_adapters if a in head.modules_to_save]
        head = (
            head.modules_to_save[active[0]] if active and not head.disable_adapters else head.original_module
        )
    if hasattr(head, "base_layer"):
        raise ValueError(
            "the LM head carries a LoRA adapter, which the fused head does not reproduce; use loss_impl='logits'"
        )
    if not isinstance(head, nn.Linear):
        raise ValueError(
            f"the model's output head is {type(head).__name__}, not a plain nn.Linear; use loss_impl='logits'"
        )
    return head


def hidden_and_head(model: nn.Module, **batch) -> HeadInputs:
    """Forward the model for its final hidden states (projecting one position only) and return its head.

    The weight and bias are whole plain tensors (gathered from their shards under ZeRO-3 / FSDP2) whose
    gradients reach the model's parameters; a frozen head comes back not requiring grad.
    """
    check_fusable(model)
    batch = {k: v for k, v in batch.items() if k not in ("labels", "num_items_in_batch")}
    out = model(**batch, output_hidden_states=True, logits_to_keep=1, use_cache=False)
    return head_inputs(model, out.hidden_states[-1])  # [B, T, d], after the final norm


def head_inputs(model: nn.Module, hidden: Tensor) -> HeadInputs:
    """``hidden`` with the model's head weight and bias, gathered whole (ZeRO-3 / FSDP2) for the loss only.

    Called after the model's forward (``hidden_and_head``) or inside it (``sedsft.patch``); the head is
    looked up then, since FSDP swaps the parameter objects around forward.
    """
    head = check_fusable(model)
    weight = full_parameter(head.weight, dim=2, compute_dtype=hidden.dtype)
    return HeadInputs(
        hidden=hidden, weight=weight, bias=full_parameter(head.bias, dim=1, compute_dtype=hidden.dtype)
    )


def head_loss(parts: HeadInputs, labels: Tensor, *, objective: str, **kwargs):
    """``fused_linear`` on ``parts`` (outside autocast: the engine picks its own accumulation dtype)."""
    from .fused import fused_linear

    with torch.autocast(device_type=parts.hidden.device.type, enabled=False):
        return fused_linear(
            parts.hidden, parts.weight, labels, objective=objective, bias=parts.bias, **kwargs
        )


def fused_forward_loss(model: nn.Module, batch: dict, *, objective: str, **kwargs):
    """``fused_linear`` on a causal LM: the one call a trainer needs."""
    return head_loss(hidden_and_head(model, **batch), batch["labels"], objective=objective, **kwargs)
