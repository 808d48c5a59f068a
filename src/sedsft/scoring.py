"""A causal LM's next-token statistics at chosen positions of a batch: the one model-level scoring routine.

Calibration (``sedsft calibrate`` and the SFT trainer), ``sedsft analyze topk`` and ``sedsft analyze heatmap``
all call :func:`score_batch`. It runs the model for its final hidden states (``hidden_and_head``: the model
projects one position only), picks the positions, and hands those rows and the LM head to
:func:`sedsft.losses.token_stats`, which streams the head in chunks. So no ``[B, T, V]`` logits exist when
the head is one the engine reproduces; only for other heads (soft-capped or scaled logits, a LoRA on the
head) are the model's own logits used.

    scored = score_batch(model, batch, top_k=10, positions="labels")   # batch: input_ids, attention_mask, labels
    scored.stats.topk_mass(2)    # [N] P_top2 at the N positions that predict a label token
    scored.stats.prob            # [N] gold probability (positions="labels")
    scored.row, scored.position  # [N] where each position is in the batch (row-major order)

Position t predicts token t + 1 (Hugging Face's unshifted ``labels``). ``positions="labels"`` keeps the
positions whose next token is a label (not -100); ``"all"`` keeps every non-padding position, the last
one of each sequence included.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import UserError, check_number
from .losses import TokenStats, hidden_and_head, token_stats
from .losses.head import unwrap

POSITIONS = ("labels", "all")
MAX_TOP_K = 100  # largest k scored: beyond it P_topk is ~1 everywhere and [N, k] rows only cost memory
_MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")


@dataclass
class ScoredPositions:
    """Statistics at the N selected positions of one batch, in row-major order (batch row, then position)."""

    stats: TokenStats  # top_logp / top_ids [N, k], entropy [N], logp [N] (positions="labels" only)
    row: Tensor  # [N] int64: batch row of each position
    position: Tensor  # [N] int64: index t of the position, which predicts token t + 1
    target: Tensor  # [N] int64: labels[t + 1], -100 where the next token is not a label
    logits_dtype: torch.dtype  # dtype the model's own logits would have (the head's)

    def per_row(self, values: Tensor, num_rows: int) -> list[Tensor]:
        """``values`` [N] split into one piece per batch row (empty pieces for rows with no position)."""
        counts = torch.bincount(self.row.cpu(), minlength=num_rows)  # [B]
        return list(values.split(counts.tolist()))


def check_top_k(k, *, name: str = "top_k") -> int:
    """``k`` as a scoring size: an integer in 1..MAX_TOP_K, else a one-line error naming ``name``."""
    return check_number(name, k, low=1, high=MAX_TOP_K, integer=True)


def context_length(model: nn.Module) -> int | None:
    """Positions the model is configured for (``max_position_embeddings``, RoPE scaling included), if known."""
    from sedsft.limits import config_context

    return config_context(getattr(unwrap(model), "config", None))


def check_length(model: nn.Module, length: int) -> None:
    """Refuse a sequence longer than the model's context: beyond it the numbers mean little, and attention's
    memory grows with the square of the length (a 200,000-token record asks for tens of GB)."""
    context = context_length(model)
    if context is not None and length > context:
        raise UserError(
            f"a sequence of {length} tokens is longer than the model's context ({context} positions, "
            f"max_position_embeddings); truncate the data to at most {context} tokens (--max_length {context})"
        )


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """No dropout and no gradient while scoring; the model's train/eval state is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _selection(batch: dict, positions: str) -> tuple[Tensor, Tensor]:
    """``([B, T] bool selected positions, [B, T] the label each position predicts or -100)``."""
    ids = batch["input_ids"]
    target = torch.full_like(ids, -100)  # [B, T]
    labels = batch.get("labels")
    if labels is not None:
        target[:, :-1] = labels[:, 1:]
    if positions == "labels":
        if labels is None:
            raise ValueError("positions='labels' needs a batch with labels")
        return target != -100, target
    mask = batch.get("attention_mask")
    return (mask.bool() if mask is not None else torch.ones_like(ids, dtype=torch.bool)), target


@torch.no_grad()
def score_batch(
    model: nn.Module,
    batch: dict,
    *,
    top_k: int,
    positions: str = "labels",
    chunk_size: int | None = None,
    impl: str = "auto",
) -> ScoredPositions:
    """Run ``model`` on ``batch`` and return the next-token statistics at the chosen positions.

    ``batch`` holds ``[B, T]`` tensors: ``input_ids``, ``attention_mask`` (optional), ``labels`` (needed for
    ``positions="labels"``), ``position_ids`` (optional). The caller chooses train/eval mode (see
    :func:`eval_mode`) and, where the data is not training data, bounds the length (:func:`check_length`).
    ``impl`` and ``chunk_size`` go to :func:`~sedsft.losses.token_stats` (the engine's implementation).
    """
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
    check_top_k(top_k)
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, Tensor)}
    sel, target = _selection(batch, positions)
    inputs = {k: batch[k] for k in _MODEL_INPUTS if k in batch}
    gold = target[sel] if positions == "labels" else None  # [N]
    try:  # the engine's path; hidden_and_head refuses (before any forward) a head it cannot reproduce
        parts = hidden_and_head(model, **inputs)
    except ValueError:
        parts = None
    if parts is not None:
        rows, weight, bias, dtype = parts.hidden[sel], parts.weight, parts.bias, parts.weight.dtype  # [N, d]
        rows = rows.to(dtype)
    else:  # soft-capped or scaled logits, a LoRA on the head: the model's own logits
        logits = model(**inputs, use_cache=False).logits  # [B, T, V]
        rows, weight, bias, dtype = logits[sel], None, None, logits.dtype  # [N, V]
    with torch.autocast(device_type=device.type, enabled=False):  # the head in its own dtype, fp32 statistics
        impl = impl if weight is not None else "torch"  # rows that are logits take the torch path
        stats = token_stats(rows, weight, gold, bias=bias, top_k=top_k, chunk_size=chunk_size, impl=impl)
    row, position = sel.nonzero(as_tuple=True)  # row-major: the order of hidden[sel]
    return ScoredPositions(stats=stats, row=row, position=position, target=target[sel], logits_dtype=dtype)
