"""The objectives on materialised logits ``[B, T, V]``: the readable path, and the reference for ``fused``.

Conventions follow Hugging Face causal LMs: ``labels`` are unshifted (the logits at t predict
``labels[t + 1]``), ``ignore_index`` marks positions without a loss, and the result is the sum of
per-token losses divided once by ``num_items_in_batch`` (or by the number of kept tokens).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .objectives import GEM_WEIGHTS, TokenTerms, get_objective
from .stats import BatchStats, LossOutput


def shift_and_keep(labels: Tensor, *, ignore_index: int) -> tuple[Tensor, Tensor]:
    """Positions (b, t) whose next label is kept, and those labels: ``kept`` [B, T-1] bool, ``y`` [N]."""
    if labels.dim() != 2:
        raise ValueError(f"labels must be [batch, seq], got shape {tuple(labels.shape)}")
    nxt = labels[:, 1:]  # [B, T-1]
    kept = nxt != ignore_index
    return kept, nxt[kept]


def scored_rows(labels: Tensor, *, vocab_size: int, ignore_index: int) -> tuple[Tensor, Tensor]:
    """Where the scored rows are and their labels, by index: ``idx`` [N] into the flattened ``[B * T]``
    positions (the position t predicts ``labels[b, t + 1]``) and ``y`` [N]; labels are checked too.

    The one host sync of a fused call: N and the count of labels outside the vocabulary are read together
    (a boolean-mask gather would sync again for each tensor it selects from).
    """
    if labels.dim() != 2:
        raise ValueError(f"labels must be [batch, seq], got shape {tuple(labels.shape)}")
    nxt = labels[:, 1:]  # [B, T-1]
    kept = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)  # [B, T]: position t scored
    kept[:, :-1] = nxt != ignore_index
    bad = kept[:, :-1] & ((nxt < 0) | (nxt >= vocab_size))
    n_rows, n_bad = torch.stack([kept.sum(), bad.sum()]).tolist()  # the one host sync
    if n_bad:
        check_labels(nxt[bad], vocab_size, ignore_index=ignore_index)  # raises, naming a bad label
    flat = kept.flatten()  # [B * T]
    slot = torch.where(flat, flat.cumsum(0) - 1, n_rows)  # each kept position's row; the rest: a dump slot
    idx = torch.empty(n_rows + 1, dtype=torch.long, device=labels.device)
    idx.scatter_(0, slot, torch.arange(flat.numel(), device=labels.device))
    idx = idx[:n_rows]  # [N] in order
    return idx, labels.flatten()[idx + 1]


def check_labels(y: Tensor, vocab_size: int, *, ignore_index: int) -> None:
    bad = (y < 0) | (y >= vocab_size)  # [N]
    if y.numel() and bool(bad.any()):  # the one host sync of the check
        raise ValueError(
            f"label {y[bad][0].item()} is outside the vocabulary [0, {vocab_size}); fix the labels or mark them "
            f"{ignore_index}"
        )


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp64 stays fp64 (reference checks); everything else is accumulated in fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def denominator(num_items_in_batch, kept_count: int, device, dtype=torch.float32) -> Tensor:
    """The one divisor: num_items_in_batch when given (HF gradient accumulation), else the kept count."""
    if num_items_in_batch is None:
        return torch.full(
            (), max(kept_count, 1), dtype=dtype, device=device
        )  # a fill: no host-to-device copy
    if not isinstance(num_items_in_batch, Tensor):
        return torch.full((), max(float(num_items_in_batch), 1.0), dtype=dtype, device=device)
    return num_items_in_batch.to(device=device, dtype=dtype).clamp(min=1.0)


def token_terms(z: Tensor, y: Tensor, *, top_k: int, gem=None) -> tuple[TokenTerms, Tensor, Tensor]:
    """TokenTerms for logits ``z`` [N, V] (fp32, with grad) and gold ``y`` [N]; plus entropy and correctness."""
    gold = z.gather(1, y[:, None]).squeeze(1)  # [N]
    lse = z.logsumexp(-1)  # [N]
    weighted = weight_sum = None
    with torch.no_grad():  # measurements, not part of any gradient
        top = z.topk(min(top_k, z.shape[-1]), dim=-1).values  # [N, k]
        topk_mass = (top - lse[:, None]).exp().sum(-1)
        logp_all = z - lse[:, None]  # [N, V]
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        correct = gold >= top[:, 0]
        if gem is not None:
            c = torch.softmax(z / gem.beta, dim=-1)  # [N, V] GEM's tempered target, no gradient
            w = GEM_WEIGHTS[gem.h](z, gold)
            if w is not None:
                c = c * w
    if gem is not None:
        weighted = (c * z).sum(-1)  # gradient flows into z with weight c
        weight_sum = c.sum(-1)
    return TokenTerms(gold, lse, topk_mass, weighted, weight_sum), entropy, correct


def summarize(objective, options, terms: TokenTerms, entropy: Tensor, correct: Tensor) -> BatchStats:
    """The batch's statistic sums (no gradient); the fused engine uses the same routine per chunk."""
    with torch.no_grad():
        f64 = torch.float64
        zero = torch.zeros((), dtype=f64, device=terms.lse.device)
        mask = objective.mask(terms, options) if objective.mask else None
        weight = objective.weight(terms, options) if objective.weight and mask is not None else None
        return BatchStats(
            tokens=torch.full((), terms.lse.numel(), dtype=f64, device=terms.lse.device),  # no host copy
            masked=mask.sum().to(f64) if mask is not None else zero,
            penalty=objective.penalty(terms, options).sum().to(f64) if objective.penalty else zero,
            prob=terms.logp.exp().sum().to(f64),
            entropy=entropy.sum().to(f64),
            topk_mass=terms.topk_mass.sum().to(f64),
            correct=correct.sum().to(f64),
            masked_weight=(mask * weight).sum().to(f64) if weight is not None else zero,
            masked_negative=(mask * (weight < 0)).sum().to(f64) if weight is not None else zero,
        )


def objective_loss(
    name: str,
    logits: Tensor,
    labels: Tensor,
    *,
    num_items_in_batch=None,
    ignore_index: int = -100,
    return_stats: bool = False,
    **options,
) -> Tensor | LossOutput:
    """Any registered objective on ``logits`` [B, T, V]; see the module docstring for conventions."""
    objective = get_objective(name)
    opts = objective.options(**options)
    if logits.dim() != 3 or logits.shape[:2] != labels.shape:
        raise ValueError(
            f"logits must be [B, T, V] and labels [B, T]; got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    kept, y = shift_and_keep(labels, ignore_index=ignore_index)
    check_labels(y, logits.shape[-1], ignore_index=ignore_index)
    acc = accumulation_dtype(logits.dtype)
    z = logits[:, :-1][kept].to(acc)  # [N, V]; fp32 accumulation for bf16/fp16 logits
    terms, entropy, correct = token_terms(
        z, y, top_k=opts.top_k, gem=opts if objective.uses_gem_weights else None
    )
    per_token = objective.loss(terms, opts)  # [N]
    loss = per_token.sum() / denominator(num_items_in_batch, y.numel(), logits.device, acc)
    if return_stats:
        return LossOutput(loss, summarize(objective, opts, terms, entropy, correct))
    return loss


def cross_entropy(logits, labels, *, num_items_in_batch=None, ignore_index=-100, return_stats=False):
    """-log p."""
    return objective_loss(
        "ce",
        logits,
        labels,
        num_items_in_batch=num_items_in_batch,
        ignore_index=ignore_index,
        return_stats=return_stats,
    )


def dft(logits, labels, *, num_items_in_batch=None, ignore_index=-100, return_stats=False):
    """-sg(p) log p."""
    return objective_loss(
        "dft",
        logits,
        labels,
        num_items_in_batch=num_items_in_batch,
        ignore_index=ignore_index,
        return_stats=return_stats,
    )


def gem(
    logits, labels, *, beta=0.7, h="linear", num_items_in_batch=None, ignore_index=-100, return_stats=False
):
    """-sum_v c_v (log p - log pi_v), c = sg(softmax(z / beta) * w)."""
    return objective_loss(
        "gem", logits, labels, beta=beta, h=h,
        num_items_in_batch=num_items_in_batch, ignore_index=ignore_index, return_stats=return_stats,
    )  # fmt: skip


def sed(
    logits, labels, *, tau, top_k=2, lam=1.0, num_items_in_batch=None, ignore_index=-100, return_stats=False
):
    """-log p + lam * 1[P_topk < tau] * (p - 1/2)^2  (SED-SFT, Eq. 1)."""
    return objective_loss(
        "sed", logits, labels, tau=tau, top_k=top_k, lam=lam,
        num_items_in_batch=num_items_in_batch, ignore_index=ignore_index, return_stats=return_stats,
    )  # fmt: skip


def sed_nomask(
    logits, labels, *, top_k=2, lam=1.0, num_items_in_batch=None, ignore_index=-100, return_stats=False
):
    """SED-SFT without the mask: -log p + lam * (p - 1/2)^2 at every token."""
    return objective_loss(
        "sed_nomask", logits, labels, top_k=top_k, lam=lam,
        num_items_in_batch=num_items_in_batch, ignore_index=ignore_index, return_stats=return_stats,
    )  # fmt: skip
