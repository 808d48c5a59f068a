"""The recompute GPU engine (memory): no logits buffer in forward, one ``[N, slab]`` gradient buffer in backward.

Kernels: :mod:`.tile_kernels`. Per call of N scored rows:

    forward   stats_kernel: h tile x W tile (tl.dot, fp32), folded into per-row statistics per vocabulary
              split ([S, N], a few bytes per token); the splits are merged here (log-sum-exp rules), the
              objective's coefficients come from :func:`.plan.token_coefficients` over [N] tensors
    backward  per vocabulary slab [v_lo, v_hi):
              grad_kernel: recompute the logit tile, G = g_lse softmax + g_w c + g_gold onehot -> [N, slab]
                           in the input dtype (bf16)
              grad_h += G W[slab]        cuBLAS, summed in fp32 across slabs (one slab: written directly)
              grad_w[slab] = G^T h       cuBLAS, one complete product per slab: rounded once
              grad_b[slab] = G.sum(0)    fp32

No atomics anywhere: the gradients are deterministic. Four GEMM-equivalents in all (two sweeps of Triton
tiles, two cuBLAS products), against the chunked engine's three, for a memory above the inputs of the
slab buffer (``SEDSFT_FUSED_BUDGET_MB``, default 256 MiB on CUDA), the fp32 hidden-gradient sum (N d 4
bytes, only with more than one slab) and [N]-sized statistics; the weight gradient is written in the weight's
dtype slab by slab, with no fp32 [V, d] copy. A frozen input gets neither a buffer nor a product.

Why backward recomputes rather than keeping a gradient from forward: the coefficients need the whole row's
statistics, so a gradient costs a second sweep over the tiles wherever it runs; in backward it is skipped
under ``no_grad``, knows which inputs need one, and a second backward works.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
from torch import Tensor

from . import launch
from .logits import summarize
from .objectives import TokenTerms, get_objective
from .plan import Coefficients, Plan, add_product, token_coefficients
from .stats import BatchStats

_TYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
_PROGRAMS_PER_SM = 4  # forward: vocabulary splits so that every SM gets a few programs
_SLAB_BUDGET_MB = 256  # the [N, slab] G buffer on CUDA; SEDSFT_FUSED_BUDGET_MB overrides


@dataclass(frozen=True)
class Tiles:
    """One tile configuration: token rows, vocabulary columns, hidden size per dot step; warps, stages."""

    b: int
    v: int
    d: int
    warps: int
    stages: int


# Preference order: large tiles first, then smaller tiles / fewer stages for the 99 KB of shared memory of
# sm_86/89 (and 163 KB on sm_80 with fp32 inputs). Keyed by the input's element size (bf16/fp16: 2, fp32: 4).
# Offline compiles (Triton 3.9, d = 3584): the forward's 128 x 128 tile fits without a top-k (249-254
# registers); with one its working copy spills there, and 128 x 64 (8 warps, 32 values a thread) fits
# with k = 8. fp32 inputs follow torch's matmul precision ("highest": tl.dot on FMA units, whose operands
# live in registers): 16 values a thread.
STATS_TILES = {
    2: (
        Tiles(128, 128, 64, 8, 3),
        Tiles(128, 64, 64, 8, 3),
        Tiles(128, 64, 64, 8, 2),
        Tiles(64, 128, 64, 8, 3),
        Tiles(64, 64, 64, 8, 2),
    ),
    4: (Tiles(128, 64, 32, 8, 3), Tiles(64, 64, 16, 8, 2), Tiles(32, 64, 16, 4, 2), Tiles(32, 32, 16, 4, 1)),
}
GRAD_TILES = {
    2: (
        Tiles(128, 128, 64, 8, 3),
        Tiles(128, 128, 64, 8, 2),
        Tiles(128, 64, 64, 8, 2),
        Tiles(64, 64, 64, 4, 2),
    ),
    4: (
        Tiles(128, 128, 32, 8, 3),
        Tiles(128, 64, 32, 8, 2),
        Tiles(64, 64, 16, 8, 2),
        Tiles(32, 64, 16, 4, 2),
    ),
}
GOLD_TILES = (Tiles(32, 1, 128, 4, 1), Tiles(16, 1, 64, 4, 1))
INTERPRETER_TILES = Tiles(16, 32, 16, 4, 1)  # CPU tests: shapes span several tiles of each kind


def _kernels():
    from . import tile_kernels

    return tile_kernels


def _kp(k: int) -> int:
    return max(2, 1 << (k - 1).bit_length()) if k else 2


def _ptr(typ: str, present: bool) -> str:
    return typ if present else "constexpr"


def _launch(
    name, kernel, sig: dict, consts: dict, tiles: Tiles, d: int, ints: tuple[str, ...]
) -> launch.Launch:
    consts = {n: None for n, t in sig.items() if t == "constexpr"} | consts
    sig = sig | dict.fromkeys(consts.keys() - sig.keys(), "constexpr")
    sig = {name: sig[name] for name in kernel.arg_names}  # the kernel's order; a missing argument raises
    # the hidden size and row strides are multiples of 16 for real models (the JIT specializes on it)
    m16 = ints if d % 16 == 0 else tuple(a for a in ints if a not in ("D", "s_hn", "s_wv"))
    return launch.Launch(name, kernel, sig, consts, tiles.warps, tiles.stages, multiple_of_16=m16)


def _dot_consts(dtype: torch.dtype, cuda: bool) -> dict:
    return launch.dot_options(torch.device("cuda" if cuda else "cpu"), dtype)


def stats_launch(*, dtype, top_k: int, gem: bool, tiles: Tiles, d: int, cuda: bool = True) -> launch.Launch:
    """The forward kernel for inputs in ``dtype`` (top_k = 0: no top-k and no entropy)."""
    t = _TYPES[dtype]
    k = top_k > 0
    sig = {"H": f"*{t}", "W": f"*{t}", "BIAS": f"*{t}", "Y": "*i64", "GOLDW": _ptr("*fp32", gem)}
    sig |= {"OUT_M": "*fp32", "OUT_S": "*fp32", "OUT_ENT": _ptr("*fp32", k), "OUT_GOLD": "*fp32"}
    sig |= {name: _ptr("*fp32", gem) for name in ("OUT_SB", "OUT_AW", "OUT_AWZ")}
    sig |= {"OUT_TOPV": _ptr("*fp32", k), "OUT_TOPI": _ptr("*i32", k)}
    sig |= dict.fromkeys(("N", "V", "D", "V_SPLIT", "s_hn", "s_wv"), "i32")
    sig |= {"inv_beta": "fp32", "has_bias": "i32", "gem_logsig": "i32"}
    consts = dict(TOP_K=top_k, KP=_kp(top_k), ENTROPY=k, GEM=gem, **_dot_consts(dtype, cuda))
    consts |= dict(BLOCK_B=tiles.b, BLOCK_V=tiles.v, BLOCK_D=tiles.d)
    return _launch(
        "tile_stats", _kernels().stats_kernel, sig, consts, tiles, d, ("D", "V_SPLIT", "s_hn", "s_wv")
    )


def grad_launch(*, dtype, gem: bool, tiles: Tiles, d: int, cuda: bool = True) -> launch.Launch:
    """The backward kernel that writes G for one slab, in ``dtype``."""
    t = _TYPES[dtype]
    sig = {"H": f"*{t}", "W": f"*{t}", "BIAS": f"*{t}", "Y": "*i64", "LSE": "*fp32", "C_LSE": "*fp32"}
    sig |= {"C_GOLD": "*fp32", "LSEB": _ptr("*fp32", gem), "C_W": _ptr("*fp32", gem)}
    sig |= {"GOLDW": _ptr("*fp32", gem), "G": f"*{t}"}
    sig |= dict.fromkeys(("N", "D", "v_lo", "v_hi", "s_hn", "s_wv", "s_gn"), "i32")
    sig |= {"inv_beta": "fp32", "has_bias": "i32", "gem_logsig": "i32"}
    consts = dict(
        GEM=gem, **_dot_consts(dtype, cuda), GROUP_B=8, BLOCK_B=tiles.b, BLOCK_V=tiles.v, BLOCK_D=tiles.d
    )
    return _launch("tile_grad", _kernels().grad_kernel, sig, consts, tiles, d, ("D", "s_hn", "s_wv", "s_gn"))


def gold_launch(*, dtype, tiles: Tiles, d: int) -> launch.Launch:
    """The gold-logit kernel (GEM's logsigmoid weights)."""
    t = _TYPES[dtype]
    sig = {"H": f"*{t}", "W": f"*{t}", "BIAS": f"*{t}", "Y": "*i64", "OUT": "*fp32"}
    sig |= dict.fromkeys(("N", "D", "s_hn", "s_wv", "has_bias"), "i32")
    consts = dict(BLOCK_B=tiles.b, BLOCK_D=tiles.d)
    return _launch("tile_gold", _kernels().gold_kernel, sig, consts, tiles, d, ("D", "s_hn", "s_wv"))


def _call_class(objective: str, top_k: int | None, vocab: int) -> tuple[int, bool]:
    """(k, gem) of the kernels: k = 0 without a top-k (the entropy comes with the top-k, as statistics do)."""
    return (min(top_k, vocab) if top_k else 0), get_objective(objective).uses_gem_weights


def launch_options(
    *, dtype: torch.dtype, objective: str, top_k: int | None, frozen_head: bool, d: int, vocab: int
) -> dict[str, list[launch.Launch]]:
    """Every kernel this engine launches for such a call on CUDA, its configurations in preference order.

    ``top_k`` None: no top-k and no entropy. ``frozen_head`` changes no kernel (the hidden gradient still
    needs G; the products are cuBLAS's). GEM's objective lists the gold kernel (its logsigmoid weighting
    launches it; the launch options do not see ``h``).
    """
    k, gem = _call_class(objective, top_k, vocab)
    size = 4 if dtype == torch.float32 else 2
    out = {
        "tile_stats": [stats_launch(dtype=dtype, top_k=k, gem=gem, tiles=t, d=d) for t in STATS_TILES[size]],
        "tile_grad": [grad_launch(dtype=dtype, gem=gem, tiles=t, d=d) for t in GRAD_TILES[size]],
    }
    if gem:
        out["tile_gold"] = [gold_launch(dtype=dtype, tiles=t, d=d) for t in GOLD_TILES]
    return out


def launches(
    device: torch.device, *, dtype, objective: str, top_k: int | None, frozen_head: bool, d: int, vocab: int
) -> dict[str, launch.Launch] | None:
    """The configurations launched on ``device`` (None: none fits); the interpreter gets small tiles."""
    call = dict(dtype=dtype, objective=objective, top_k=top_k, frozen_head=frozen_head, d=d, vocab=vocab)
    if device.type == "cuda":
        return launch.chosen(sys.modules[__name__], device, **call)
    k, gem = _call_class(objective, top_k, vocab)
    t = INTERPRETER_TILES
    out = {
        "tile_stats": stats_launch(dtype=dtype, top_k=k, gem=gem, tiles=t, d=d, cuda=False),
        "tile_grad": grad_launch(dtype=dtype, gem=gem, tiles=t, d=d, cuda=False),
    }
    if gem:
        out["tile_gold"] = gold_launch(dtype=dtype, tiles=Tiles(16, 1, 16, 4, 1), d=d)
    return out


def _plan_launches(plan: Plan, h: Tensor, vocab: int) -> dict[str, launch.Launch]:
    if plan.launches:
        return plan.launches
    picks = launches(
        h.device, dtype=h.dtype, objective=plan.objective.name, top_k=plan.top_k,
        frozen_head=not plan.needs[1], d=h.shape[1], vocab=vocab,
    )  # fmt: skip
    if picks is None:
        raise ValueError("no configuration of the recompute engine's kernels fits this GPU; use impl='auto'")
    return picks


def slab_columns(n_rows: int, vocab: int, dtype: torch.dtype, device: torch.device, block_v: int) -> int:
    """Vocabulary columns per backward slab: the ``[N, slab]`` G buffer within the budget, whole tiles."""
    env = os.environ.get("SEDSFT_FUSED_BUDGET_MB")
    mb = float(env) if env else _SLAB_BUDGET_MB
    cols = int(mb * 2**20 // (max(n_rows, 1) * dtype.itemsize)) // block_v * block_v
    return max(block_v, min(cols, launch.cdiv(vocab, block_v) * block_v))


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


def _bias_args(weight: Tensor, bias: Tensor | None) -> dict:
    """The bias pointer and flag (absent: the weight stands in, never read)."""
    if bias is None:
        return {"BIAS": weight, "has_bias": 0}
    return {"BIAS": bias.to(weight.dtype), "has_bias": 1}


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
    picks: dict[str, launch.Launch] | None = None,
) -> ForwardStats:
    """Statistics of the rows ``h`` [N, d] (one sweep of the kernel over the vocabulary, no logits kept).

    ``picks``: the launches (default: chosen for this device). The entropy and the ids come with the top-k.
    """
    h, weight = h.contiguous(), weight.contiguous()
    n_rows, d = h.shape
    vocab = weight.shape[0]
    if picks is None:
        picks = launches(
            h.device, dtype=h.dtype, objective="gem" if gem is not None else "ce",
            top_k=top_k or (1 if ids or entropy else None), frozen_head=True, d=d, vocab=vocab,
        )  # fmt: skip
        if picks is None:
            raise ValueError("no configuration of the recompute engine's kernels fits this GPU")
    lch = picks["tile_stats"]
    c = lch.constexprs
    k, kp, bb, bv = c["TOP_K"], c["KP"], c["BLOCK_B"], c["BLOCK_V"]
    if (ids or entropy) and not k:
        raise ValueError("forward_stats: ids and the entropy come with a top-k; pass top_k >= 1")
    n_b, n_vt = launch.cdiv(max(n_rows, 1), bb), launch.cdiv(vocab, bv)
    target = _PROGRAMS_PER_SM * (launch.sm_count(h.device.index or 0) if h.device.type == "cuda" else 2)
    v_split = launch.cdiv(n_vt, max(1, min(n_vt, launch.cdiv(target, n_b)))) * bv
    splits = launch.cdiv(vocab, v_split)
    gem_logsig = gem is not None and gem.h == "logsigmoid"
    inv_beta = 1.0 / gem.beta if gem is not None else 1.0
    f32 = dict(dtype=torch.float32, device=h.device)
    if y is None:
        y = torch.zeros(n_rows, dtype=torch.long, device=h.device)

    def parts():
        return torch.empty(splits, n_rows, **f32)  # [S, N]

    m, s, gold = parts(), parts(), parts()
    ent = parts() if k else None
    sb, aw, awz = (parts(), parts(), parts()) if c["GEM"] else (None, None, None)
    topv = torch.empty(splits, n_rows, kp, **f32) if k else None  # [S, N, KP]
    topi = torch.empty(splits, n_rows, kp, dtype=torch.int32, device=h.device) if k else None
    gold_w = gold_logits(picks["tile_gold"], h, weight, bias, y) if gem_logsig else None
    if n_rows:
        outs = {"OUT_ENT": ent, "OUT_TOPV": topv, "OUT_TOPI": topi} if k else {}
        if c["GEM"]:
            outs |= {"GOLDW": gold_w if gold_w is not None else m, "OUT_SB": sb, "OUT_AW": aw, "OUT_AWZ": awz}
        launch.run(
            lch, (n_b, splits), H=h, W=weight, **_bias_args(weight, bias), Y=y,
            OUT_M=m, OUT_S=s, OUT_GOLD=gold, **outs,
            N=n_rows, V=vocab, D=d, V_SPLIT=v_split, s_hn=h.stride(0), s_wv=weight.stride(0),
            inv_beta=inv_beta, gem_logsig=int(gem_logsig),
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
        gold=gold.sum(0),  # only the split holding y contributes
        top_values=None,
        top_ids=None,
        entropy=log_s - (r * (ent + shift * s)).sum(0) / sumexp if ent is not None else None,
        gold_w=gold_w,
    )
    if c["GEM"]:
        rb = (shift * inv_beta).exp()
        aw_t = (rb * aw).sum(0)
        awz_t = (rb * (awz + shift * aw)).sum(0)  # sum e^{(z - M)/beta} w (z - M)
        sb_t = (rb * sb).sum(0)
        out.weighted = row_max * (aw_t / sb_t) + awz_t / sb_t
        out.weight_sum = aw_t / sb_t
        out.lse_beta = row_max * inv_beta + sb_t.log()
    if k:
        cand_v = topv.permute(1, 0, 2).reshape(n_rows, splits * kp)  # [N, S * KP], splits in column order
        # a stable sort of the few candidates: equal values keep the lower column, across splits too
        best_v, best_at = cand_v.sort(dim=-1, descending=True, stable=True)
        out.top_values = best_v[:, :k]  # [N, k]
        if ids:
            cand_i = topi.permute(1, 0, 2).reshape(n_rows, splits * kp)
            out.top_ids = cand_i.gather(1, best_at[:, :k]).long()
    return out


def gold_logits(lch: launch.Launch, h: Tensor, weight: Tensor, bias: Tensor | None, y: Tensor) -> Tensor:
    """z_y = h . W[y] + b[y] per row, fp32 [N]."""
    out = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
    if h.shape[0]:
        launch.run(
            lch, (launch.cdiv(h.shape[0], lch.constexprs["BLOCK_B"]),), H=h, W=weight,
            **_bias_args(weight, bias), Y=y, OUT=out, N=h.shape[0], D=h.shape[1],
            s_hn=h.stride(0), s_wv=weight.stride(0),
        )  # fmt: skip
    return out


# ---- backward --------------------------------------------------------------------------------------


def _product_into(out: Tensor, a: Tensor, b: Tensor) -> None:
    """out = a @ b, one complete product rounded once to out's dtype (fp32 accumulation inside)."""
    if out.is_cuda or a.dtype == torch.float32:
        torch.mm(a, b, out=out)
    else:  # CPU: an fp32 product, then one rounding
        out.copy_(a.float() @ b.float())


def gradients(h, weight, bias, y, lse, coef: Coefficients, *, gem, lse_beta, gold_w, needs, lch):
    """(grad_h, grad_w, grad_b) of sum_t loss_t for coefficients already scaled; None where not needed."""
    need_h, need_w, need_b = needs
    h, weight = h.contiguous(), weight.contiguous()
    n_rows, d = h.shape
    vocab = weight.shape[0]
    grad_h = torch.empty_like(h) if need_h and n_rows else (torch.zeros_like(h) if need_h else None)
    grad_w = torch.empty_like(weight) if need_w and n_rows else (torch.zeros_like(weight) if need_w else None)
    grad_b = torch.zeros(vocab, dtype=torch.float32, device=h.device) if need_b else None  # fp32 sums
    if n_rows and any(needs):
        c = lch.constexprs
        slab = slab_columns(n_rows, vocab, h.dtype, h.device, c["BLOCK_V"])
        buf = torch.empty(n_rows, slab, dtype=h.dtype, device=h.device)  # [N, slab]: G, slab by slab
        one_slab = slab >= vocab
        dh = None
        if need_h and not one_slab:  # the hidden gradient summed over slabs in fp32
            f32 = h.dtype == torch.float32
            dh = grad_h.zero_() if f32 else torch.zeros(n_rows, d, dtype=torch.float32, device=h.device)
        zeros = torch.zeros(n_rows, dtype=torch.float32, device=h.device)  # a coefficient not used
        gem_args = {}
        if gem is not None:
            gold_ptr = gold_w if gold_w is not None else lse
            gem_args = {"LSEB": lse_beta, "C_W": coef.weighted, "GOLDW": gold_ptr}
        n_b = launch.cdiv(n_rows, c["BLOCK_B"])
        for v_lo in range(0, vocab, slab):
            v_hi = min(vocab, v_lo + slab)
            g = buf[:, : v_hi - v_lo]  # [N, w]
            launch.run(
                lch, (n_b * launch.cdiv(v_hi - v_lo, c["BLOCK_V"]),),
                H=h, W=weight, **_bias_args(weight, bias), Y=y, LSE=lse,
                C_LSE=coef.lse if coef.lse is not None else zeros,
                C_GOLD=coef.gold if coef.gold is not None else zeros, **gem_args, G=buf,
                N=n_rows, D=d, v_lo=v_lo, v_hi=v_hi, s_hn=h.stride(0), s_wv=weight.stride(0), s_gn=buf.stride(0),
                inv_beta=1.0 / gem.beta if gem is not None else 1.0,
                gem_logsig=int(gem is not None and gem.h == "logsigmoid"),
            )  # fmt: skip
            if grad_b is not None:
                grad_b[v_lo:v_hi] = g.sum(0, dtype=torch.float32)
            if grad_w is not None:
                _product_into(grad_w[v_lo:v_hi], g.T, h)  # [w, d]
            if dh is not None:
                add_product(dh, g, weight[v_lo:v_hi])  # [N, d]
            elif need_h:
                _product_into(grad_h, g, weight)
        if dh is not None and dh is not grad_h:
            grad_h.copy_(dh)  # the one rounding to the input dtype
    return grad_h, grad_w, grad_b.to(bias.dtype) if need_b else None


class RecomputeFusedLinear(torch.autograd.Function):
    """loss = sum_t objective_t(h_t W^T + b) / denominator: statistics in forward, recomputed tiles in backward."""

    @staticmethod
    def forward(ctx, h, weight, bias, plan: Plan):
        obj, opts = plan.objective, plan.options
        gem = opts if obj.uses_gem_weights else None
        picks = _plan_launches(plan, h, weight.shape[0])
        fw = forward_stats(h, weight, bias, plan.y, top_k=plan.top_k, gem=gem, picks=picks)
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
        ctx.grad_launch = picks["tile_grad"]
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
            h, weight, bias, plan.y, lse, coef, gem=gem, lse_beta=lse_beta, gold_w=gold_w, needs=needs,
            lch=ctx.grad_launch,
        )  # fmt: skip
        return *grads, None
