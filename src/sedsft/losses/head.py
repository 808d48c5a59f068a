"""Run a Transformers causal LM's backbone and hand its last hidden states and LM head to ``fused_linear``.

No ``forward`` is patched: the model (possibly wrapped by DDP or DeepSpeed) runs its own forward with
``logits_to_keep=1``, so it projects a single position, and returns the final hidden states; the loss
then owns the full LM-head projection. Heads this engine cannot reproduce (logit soft-capping, logit
scaling, non-linear heads) are rejected with a message, as are weights sharded outside ``forward``
(ZeRO-3, FSDP), for which the logits path must be used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


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
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    head = getattr(head, "base_layer", head)  # a PEFT-wrapped head: LoRA on lm_head is not fused
    if not isinstance(head, nn.Linear) or head is not _plain_linear(inner.get_output_embeddings()):
        raise ValueError(
            "the model's output head is not a plain nn.Linear (adapter or custom head); use loss_impl='logits'"
        )
    w = head.weight
    if (
        w.dim() != 2
        or w.numel() == 0
        or hasattr(w, "ds_id")
        or type(w).__name__ in ("DTensor", "FlatParameter")
    ):
        raise ValueError(
            "the LM-head weight is sharded outside forward (DeepSpeed ZeRO-3 or FSDP); use loss_impl='logits' "
            "with those, or ZeRO-1/2 / DDP with the fused head"
        )
    return head


def _plain_linear(module):
    return module if isinstance(module, nn.Linear) else None


def hidden_and_head(model: nn.Module, **batch) -> HeadInputs:
    """Forward the model for its final hidden states (projecting one position only) and return its head."""
    head = check_fusable(model)
    batch = {k: v for k, v in batch.items() if k not in ("labels", "num_items_in_batch")}
    out = model(**batch, output_hidden_states=True, logits_to_keep=1, use_cache=False)
    hidden = out.hidden_states[-1]  # [B, T, d], after the final norm
    return HeadInputs(hidden=hidden, weight=head.weight, bias=head.bias)


def fused_forward_loss(model: nn.Module, batch: dict, *, objective: str, **kwargs):
    """``fused_linear`` on a causal LM: the one call a trainer needs."""
    from .fused import fused_linear

    parts = hidden_and_head(model, **batch)
    with torch.autocast(device_type=parts.hidden.device.type, enabled=False):
        return fused_linear(
            parts.hidden, parts.weight, batch["labels"], objective=objective, bias=parts.bias, **kwargs
        )
