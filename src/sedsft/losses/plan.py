"""What every engine of the fused head shares: the plan of a call, and the objective's per-token coefficients.

The torch engine (:mod:`.torch_engine`) and the two Triton engines (chunked and recompute) all read the same
per-token statistics, ask the objective for its per-token loss over those ``[N]`` tensors, and get each
token's coefficients by autograd over them (:func:`token_coefficients`). The logit gradient is then

    G = g_lse * softmax(z) + g_w * c + g_gold * onehot(y)        # [n, V]

with c = GEM's tempered target (``sg(softmax(z / beta) * w)``) where the objective uses one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .objectives import Objective, TokenTerms


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
    chunk_size: int | None = None  # rows per chunk (torch and chunked engines)
    launches: dict | None = None  # GPU engines: kernel name -> the launch.Launch chosen for this device

    @property
    def top_k(self) -> int | None:
        """k of the top-k mass when it is needed (SED's mask, or logging), else None."""
        return self.options.top_k if (self.want_stats or self.objective.mask is not None) else None


_ADDMM_OUT_DTYPE = torch.torch_version.TorchVersion(torch.__version__) >= "2.8"  # addmm(out_dtype=), CUDA


def add_product(acc: Tensor, a: Tensor, b: Tensor) -> None:
    """acc += a @ b summed in acc's dtype (fp32 for bf16/fp16 inputs): no product is rounded to the input
    dtype first. Every engine's weight-gradient sum (and the recompute engine's hidden-gradient sum)."""
    if acc.is_cuda and _ADDMM_OUT_DTYPE and a.dtype == b.dtype != acc.dtype:
        torch.addmm(
            acc, a, b, out_dtype=acc.dtype, out=acc
        )  # cuBLAS: bf16 tensor cores, fp32 output in place
    else:  # fp32 / fp64 inputs, or fp32 copies (CPU, older torch)
        acc.addmm_(a.to(acc.dtype), b.to(acc.dtype))
