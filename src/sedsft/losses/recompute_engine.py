"""Host side of the Triton engine (kernels: :mod:`.tile_kernels`): tiles, launches, merging, autograd.

Forward: ``stats_kernel`` folds the logit tiles of S vocabulary splits into per-row statistics ([S, N]
tensors, a few bytes per token); the splits are merged here with the log-sum-exp rules, the objective
gives each token's coefficients over those [N] tensors (:func:`.fused.token_coefficients`), and only
[N]-sized tensors are kept for backward.

Backward recomputes the logit tiles (``grad_kernel``) and applies the coefficients, scaled by the
incoming gradient. Why recompute rather than keep a forward-side gradient: the kernels never hold a
row's logits, and the coefficients need the whole row's statistics, so a gradient costs a second sweep
over the tiles wherever it runs; running it in backward writes each gradient once in its final scale
(no in-place rescaling of a [V, d] tensor, a second backward works), skips it under ``no_grad`` / in
evaluation, and knows from autograd which inputs need one. The weight gradient is summed in fp32, one
vocabulary slab at a time (a bounded fp32 scratch, then one rounding to the weight's dtype); the hidden
gradient is summed in an fp32 [N, d] buffer. A frozen input gets no gradient buffer at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from . import launch
from .launch import cdiv as _cdiv
from .launch import dot_options as _dot_options
from .launch import sm_count as _sm_count
from .logits import summarize
from .objectives import TokenTerms
from .plan import Coefficients, Plan, token_coefficients
from .stats import BatchStats

_GPU_SLAB_BYTES = 64 * 2**20  # fp32 weight-gradient scratch per backward launch
_PROGRAMS_PER_SM = 4  # forward: vocabulary splits so that every SM gets a few programs


@dataclass(frozen=True)
class Blocks:
    """Tile sizes (powers of two; the ``tl.dot`` ones >= 16) and launch options."""

    b: int  # forward: token rows per tile
    v: int  # vocabulary columns per tile (both kernels)
    d: int  # hidden size per dot step (both kernels)
    gb: int  # backward: token rows per tile
    warps: int
    stages: int
    slab_rows: int  # vocabulary rows of the fp32 weight-gradient scratch (a multiple of v)


def blocks(device: torch.device, dtype: torch.dtype, d: int) -> Blocks:
    if device.type != "cuda":  # the interpreter (tests): small tiles, so that shapes span several of each
        return Blocks(b=16, v=32, d=16, gb=16, warps=4, stages=1, slab_rows=64)
    bd = 32 if dtype == torch.float32 else 64
    slab = max(128, _GPU_SLAB_BYTES // (4 * d) // 128 * 128)
    # forward tiles hold the logit tile and its int64 top-k keys: 64 rows keep them in registers
    return Blocks(b=64, v=128, d=bd, gb=128, warps=8, stages=3, slab_rows=slab)


def _kernels(device: torch.device):
    from . import tile_kernels

    return launch.kernel_module(tile_kernels, device)


# ---- forward ---------------------------------------------------------------------------------------


@dataclass
class ForwardStats:
    """Per-row statistics of ``softmax(h W^T + b)`` from the forward kernel; every tensor is fp32 [N] unless noted."""

    max: Tensor
    lse: Tensor
    gold: Tensor | None  # z_y
    top_values: Tensor | None  # [N, k] the k largest logits, descending
    top_ids: Tensor | None  # [N, k] int64
    entropy: Tensor | None
    weighted: Tensor | None = None  # GEM: sum_v c_v z_v
    weight_sum: Tensor | None = None  # GEM: sum_v c_v
    lse_beta: Tensor | None = None  # GEM: log sum_v exp(z_v / beta)
    gold_w: Tensor | None = None  # GEM logsigmoid: z_y for the weights


def forward_stats(
    h: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    y: Tensor | None,
    *,
    top_k: int | None,
    ids: bool = False,
    entropy: bool = False,
    gem=None,
) -> ForwardStats:
    """Statistics of the rows ``h`` [N, d] (one sweep of the kernel over the vocabulary, no logits kept)."""
    kernels = _kernels(h.device)
    n_rows, d = h.shape
    vocab = weight.shape[0]
    bl = blocks(h.device, h.dtype, d)
    k = min(top_k, vocab) if top_k else (1 if ids else 0)
    kp = max(2, 1 << (k - 1).bit_length()) if k else 2
    n_b, n_vt = _cdiv(max(n_rows, 1), bl.b), _cdiv(vocab, bl.v)
    target = _PROGRAMS_PER_SM * (_sm_count(h.device.index or 0) if h.device.type == "cuda" else 2)
    v_split = _cdiv(n_vt, max(1, min(n_vt, _cdiv(target, n_b)))) * bl.v
    splits = _cdiv(vocab, v_split)
    gem_mode = 0 if gem is None else (1 if gem.h == "linear" else 2)
    inv_beta = 1.0 / gem.beta if gem is not None else 1.0
    f32 = dict(dtype=torch.float32, device=h.device)

    def parts(wanted: bool):
        return torch.empty(splits, n_rows, **f32) if wanted else None  # [S, N]

    m, s = parts(True), parts(True)
    ent, gold, aw, awz, sb = (
        parts(entropy),
        parts(y is not None),
        parts(gem_mode > 0),
        parts(gem_mode > 0),
        parts(gem_mode == 2),
    )
    topv = torch.empty(splits, n_rows, kp, **f32) if k else None  # [S, N, KP]
    topi = torch.empty(splits, n_rows, kp, dtype=torch.int32, device=h.device) if k else None
    gold_w = gold_logits(h, weight, bias, y) if gem_mode == 2 else None
    if n_rows:
        kernels.stats_kernel[(n_b, splits)](
            h, weight, bias, y, gold_w, m, s, ent, gold, sb, aw, awz, topv, topi,
            n_rows, vocab, d, v_split, h.stride(0), h.stride(1), weight.stride(0), weight.stride(1), inv_beta,
            HAS_BIAS=bias is not None, HAS_Y=y is not None, TOP_K=k, KP=kp, ENTROPY=entropy, GEM=gem_mode,
            BLOCK_B=bl.b, BLOCK_V=bl.v, BLOCK_D=bl.d, num_warps=bl.warps, num_stages=bl.stages,
            **_dot_options(h.device, h.dtype),
        )  # fmt: skip

    # merge the splits: rebase every partial sum to the row's overall max M
    row_max = m.amax(0)  # [N]
    shift = m - row_max  # [S, N] <= 0
    r = shift.exp()
    sumexp = (r * s).sum(0)
    log_s = sumexp.log()
    out = ForwardStats(
        max=row_max,
        lse=row_max + log_s,
        gold=gold.sum(0) if gold is not None else None,  # only the split holding y contributes
        top_values=None,
        top_ids=None,
        entropy=log_s - (r * (ent + shift * s)).sum(0) / sumexp if ent is not None else None,
        gold_w=gold_w,
    )
    if gem_mode:
        rb = (shift * inv_beta).exp()
        aw_t = (rb * aw).sum(0)
        awz_t = (rb * (awz + shift * aw)).sum(0)  # sum e^{(z - M)/beta} w (z - M)
        sb_t = (rb * sb).sum(0) if sb is not None else aw_t  # linear: w = 1, the two sums coincide
        out.weighted = row_max * (aw_t / sb_t) + awz_t / sb_t
        out.weight_sum = aw_t / sb_t
        out.lse_beta = row_max * inv_beta + sb_t.log()
    if k:
        cand_v = topv.permute(1, 0, 2).reshape(n_rows, splits * kp)  # [N, S * KP]
        cand_i = topi.permute(1, 0, 2).reshape(n_rows, splits * kp)
        best = cand_v.topk(k, dim=-1)  # [N, k]
        out.top_values = best.values
        out.top_ids = cand_i.gather(1, best.indices).long() if ids else None
    return out


def gold_logits(h: Tensor, weight: Tensor, bias: Tensor | None, y: Tensor) -> Tensor:
    """z_y = h . W[y] + b[y] per row, fp32 [N]."""
    kernels = _kernels(h.device)
    out = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
    if h.shape[0]:
        bl = blocks(h.device, h.dtype, h.shape[1])
        kernels.gold_kernel[(_cdiv(h.shape[0], bl.gb),)](
            h, weight, bias, y, out, h.shape[0], h.shape[1],
            h.stride(0), h.stride(1), weight.stride(0), weight.stride(1),
            HAS_BIAS=bias is not None, BLOCK_B=bl.gb, BLOCK_D=bl.d,
        )  # fmt: skip
    return out


# ---- backward --------------------------------------------------------------------------------------


def gradients(h, weight, bias, y, lse, coef: Coefficients, *, gem, lse_beta, gold_w, needs):
    """(grad_h, grad_w, grad_b) of sum_t loss_t for coefficients already scaled; None where not needed."""
    need_h, need_w, need_b = needs
    n_rows, d = h.shape
    vocab = weight.shape[0]
    f32 = dict(dtype=torch.float32, device=h.device)
    dh = torch.zeros(n_rows, d, **f32) if need_h else None  # fp32 sum over the vocabulary tiles
    db = torch.zeros(vocab, **f32) if need_b else None
    low_w = weight.dtype != torch.float32
    grad_w = None
    if need_w:
        grad_w = torch.empty_like(weight) if (low_w and n_rows) else torch.zeros_like(weight)
    if n_rows and any(needs):
        kernels = _kernels(h.device)
        bl = blocks(h.device, h.dtype, d)
        slab = bl.slab_rows if need_w and low_w else vocab
        scratch = torch.empty(min(slab, vocab), d, **f32) if need_w and low_w else None  # [slab, d]
        zeros = torch.zeros(n_rows, **f32)
        gem_mode = 0 if gem is None else (1 if gem.h == "linear" else 2)
        for v_lo in range(0, vocab, slab):
            v_hi = min(vocab, v_lo + slab)
            dw = None
            if need_w:
                dw = scratch[: v_hi - v_lo].zero_() if scratch is not None else grad_w[v_lo:v_hi]
            grid = (_cdiv(n_rows, bl.gb) * _cdiv(v_hi - v_lo, bl.v),)
            kernels.grad_kernel[grid](
                h, weight, bias, y, lse,
                coef.lse if coef.lse is not None else zeros, coef.gold if coef.gold is not None else zeros,
                lse_beta, coef.weighted, gold_w, dh, dw, db,
                n_rows, vocab, d, v_lo, v_hi, h.stride(0), h.stride(1), weight.stride(0), weight.stride(1),
                1.0 / gem.beta if gem is not None else 1.0,
                HAS_BIAS=bias is not None, GEM=gem_mode, COMPUTE_DH=need_h, COMPUTE_DW=need_w, COMPUTE_DB=need_b,
                GROUP_B=8, BLOCK_B=bl.gb, BLOCK_V=bl.v, BLOCK_D=bl.d, num_warps=bl.warps, num_stages=bl.stages,
                **_dot_options(h.device, h.dtype),
            )  # fmt: skip
            if scratch is not None:
                grad_w[v_lo:v_hi].copy_(dw)  # the slab's one rounding to the weight's dtype
    grad_h = dh.to(h.dtype) if need_h else None
    grad_b = db.to(bias.dtype) if need_b else None
    return grad_h, grad_w, grad_b


class TritonFusedLinear(torch.autograd.Function):
    """loss = sum_t objective_t(h_t W^T + b) / denominator: statistics in forward, recomputed tiles in backward."""

    @staticmethod
    def forward(ctx, h, weight, bias, plan: Plan):
        obj, opts = plan.objective, plan.options
        gem = opts if obj.uses_gem_weights else None
        fw = forward_stats(h, weight, bias, plan.y, top_k=plan.top_k, entropy=plan.want_stats, gem=gem)
        topk_mass = (fw.top_values - fw.lse[:, None]).exp().sum(-1) if plan.top_k else None  # [N]
        terms = TokenTerms(fw.gold, fw.lse, topk_mass, fw.weighted, fw.weight_sum)
        per_token, coef = token_coefficients(obj, opts, terms)
        if plan.want_stats:
            stats = summarize(obj, opts, terms, fw.entropy, fw.gold >= fw.max)
        else:
            stats = BatchStats.zeros(h.device)
        ctx.save_for_backward(
            h, weight, bias, fw.lse, fw.lse_beta, fw.gold_w, coef.gold, coef.lse, coef.weighted
        )
        ctx.plan = plan
        stats_vec = stats.as_tensor()
        ctx.mark_non_differentiable(stats_vec)
        return per_token.sum() * plan.inv_denom, stats_vec

    @staticmethod
    def backward(ctx, grad_loss, _grad_stats):
        h, weight, bias, lse, lse_beta, gold_w, c_gold, c_lse, c_w = ctx.saved_tensors
        plan = ctx.plan
        coef = Coefficients(c_gold, c_lse, c_w).scaled(plan.inv_denom * grad_loss)
        gem = plan.options if plan.objective.uses_gem_weights else None
        needs = tuple(a and b for a, b in zip(plan.needs, ctx.needs_input_grad[:3]))
        grads = gradients(
            h, weight, bias, plan.y, lse, coef, gem=gem, lse_beta=lse_beta, gold_w=gold_w, needs=needs
        )
        return *grads, None
