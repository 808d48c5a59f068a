"""The chunked GPU engine (speed): three cuBLAS products per token chunk, Triton only for the row statistics.

Per chunk of n scored rows (kernels: :mod:`.row_kernels`):

    z = h_c W^T + b                    # cuBLAS, into the reused [n, V] buffer, in the input dtype (bf16)
    row_stats_kernel(z)                # one read of z: lse, gold, top-k (+ ids), entropy, GEM's sums -> [n]
    coefficients of the objective      # plan.token_coefficients over [n] tensors
    row_grad_kernel(z)                 # G = g_lse softmax + g_w c + g_gold onehot, over z, in place
    grad_h[c] = G W                    # cuBLAS, fp32 accumulation, each row complete: rounded once
    grad_w += G^T h_c                  # cuBLAS into an fp32 [V, d] sum (addmm out_dtype=fp32, torch >= 2.8)
    grad_b += G.sum(0)                 # fp32

Three products, nothing recomputed, no atomics (deterministic). As in the torch engine, whose backward
this one inherits, the gradient is ready at the end of forward and backward only scales it, once.
Memory above the inputs: the ``[n, V]`` buffer (the chunk size follows a budget,
``SEDSFT_FUSED_BUDGET_MB``, default 1 GiB on CUDA: 3,520 rows at V = 152,064 in bf16), an fp32 weight
gradient when the head trains, the hidden gradient when the hidden state does, and a few ``[N]`` rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from . import launch
from .chunk import logits_into
from .logits import summarize
from .objectives import TokenTerms, get_objective
from .plan import Plan, add_product, token_coefficients
from .stats import BatchStats
from .torch_engine import TorchFusedLinear, auto_chunk_size

_TYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
# (BLOCK_N rows, BLOCK_V columns, warps) in preference order. Both kernels stream the buffer; one row per
# statistics program (its reductions run along the row), 8 logits per thread: at most 138 registers on
# sm_80-90 (bf16, k = 8, GEM), where 16 per thread took up to 151 (fewer programs resident to hide loads).
_STATS_CONFIGS = ((1, 2048, 8), (1, 1024, 4), (1, 512, 4))
_GRAD_CONFIGS = ((4, 1024, 8), (1, 1024, 4))
INTERPRETER_BLOCKS = (16, 32)  # CPU tests (BLOCK_N, BLOCK_V): few programs, several vocabulary blocks
MIN_CHUNK_ROWS = 128  # fewer rows per chunk make skinny products: ``auto`` prefers the recompute engine


def _kernels():
    from . import row_kernels

    return row_kernels


def _kp(k: int) -> int:
    return max(2, 1 << (k - 1).bit_length()) if k else 2


def _ptr(typ: str, present: bool) -> str:
    return typ if present else "constexpr"


def stats_launch(
    *, dtype, top_k: int, entropy: bool, gem: bool, block_n: int, block_v: int, warps: int, vocab: int
) -> launch.Launch:
    """The row statistics kernel for logits in ``dtype`` (top_k = 0: no top-k)."""
    t = _TYPES[dtype]
    sig = {"Z": f"*{t}", "Y": "*i64", "OUT_MAX": "*fp32", "OUT_LSE": "*fp32", "OUT_GOLD": "*fp32"}
    sig |= {"OUT_ENT": _ptr("*fp32", entropy), "OUT_TOPV": _ptr("*fp32", top_k > 0)}
    sig |= {"OUT_TOPI": _ptr("*i32", top_k > 0)}
    sig |= {name: _ptr("*fp32", gem) for name in ("OUT_WZ", "OUT_WS", "OUT_LSEB")}
    sig |= {"N": "i32", "V": "i32", "s_zn": "i32", "inv_beta": "fp32", "gem_logsig": "fp32"}
    consts: dict[str, object] = {name: None for name, typ in sig.items() if typ == "constexpr"}
    consts |= dict(
        TOP_K=top_k, KP=_kp(top_k), KEYS16=dtype == torch.bfloat16, ENTROPY=entropy, GEM=gem,
        BLOCK_N=block_n, BLOCK_V=block_v,
    )  # fmt: skip
    sig |= {name: "constexpr" for name in ("TOP_K", "KP", "KEYS16", "ENTROPY", "GEM", "BLOCK_N", "BLOCK_V")}
    return launch.Launch(
        "row_stats", _kernels().row_stats_kernel, sig, consts, num_warps=warps, num_stages=1,
        multiple_of_16=_aligned(vocab),
    )  # fmt: skip


def grad_launch(*, dtype, gem: bool, block_n: int, block_v: int, warps: int, vocab: int) -> launch.Launch:
    """The kernel that writes G over the logits in ``dtype``."""
    sig = {"Z": f"*{_TYPES[dtype]}", "Y": "*i64", "LSE": "*fp32", "C_LSE": "*fp32", "C_GOLD": "*fp32"}
    sig |= {"LSEB": _ptr("*fp32", gem), "C_W": _ptr("*fp32", gem), "GOLD": _ptr("*fp32", gem)}
    sig |= {"N": "i32", "V": "i32", "s_zn": "i32", "inv_beta": "fp32", "gem_logsig": "fp32"}
    consts: dict[str, object] = {name: None for name, typ in sig.items() if typ == "constexpr"}
    consts |= dict(GEM=gem, BLOCK_N=block_n, BLOCK_V=block_v)
    sig |= {"GEM": "constexpr", "BLOCK_N": "constexpr", "BLOCK_V": "constexpr"}
    return launch.Launch(
        "row_grad", _kernels().row_grad_kernel, sig, consts, num_warps=warps, num_stages=1,
        multiple_of_16=_aligned(vocab),
    )  # fmt: skip


def _aligned(vocab: int) -> tuple[str, ...]:
    """The integer arguments the JIT sees as multiples of 16: V and the buffer's row stride (= V)."""
    return ("V", "s_zn") if vocab % 16 == 0 else ()


def _call_class(objective: str, top_k: int | None, vocab: int) -> tuple[int, bool, bool]:
    """(k, entropy, gem) of the kernels: statistics (entropy) come with the top-k, which logging implies."""
    k = min(top_k, vocab) if top_k else 0
    return k, k > 0, get_objective(objective).uses_gem_weights


def launch_options(
    *, dtype: torch.dtype, objective: str, top_k: int | None, frozen_head: bool, d: int, vocab: int
) -> dict[str, list[launch.Launch]]:
    """Every kernel this engine launches for such a call on CUDA, its configurations in preference order.

    ``top_k`` None: no top-k and no entropy (no statistics asked for, no mask). The kernels do not depend
    on ``frozen_head`` or ``d`` (the products are cuBLAS's).
    """
    k, entropy, gem = _call_class(objective, top_k, vocab)
    return {
        "row_stats": [
            stats_launch(
                dtype=dtype, top_k=k, entropy=entropy, gem=gem, block_n=n, block_v=b, warps=w, vocab=vocab
            )
            for n, b, w in _STATS_CONFIGS
        ],
        "row_grad": [
            grad_launch(dtype=dtype, gem=gem, block_n=n, block_v=b, warps=w, vocab=vocab)
            for n, b, w in _GRAD_CONFIGS
        ],
    }


def launches(device: torch.device, **call) -> dict[str, launch.Launch] | None:
    """The configurations launched on ``device`` (None: none fits); the interpreter gets small blocks."""
    if device.type == "cuda":
        return launch.chosen(_this_module(), device, **call)
    k, entropy, gem = _call_class(call["objective"], call["top_k"], call["vocab"])
    blocks = dict(zip(("block_n", "block_v"), INTERPRETER_BLOCKS), warps=4, vocab=call["vocab"])
    return {
        "row_stats": stats_launch(dtype=call["dtype"], top_k=k, entropy=entropy, gem=gem, **blocks),
        "row_grad": grad_launch(dtype=call["dtype"], gem=gem, **blocks),
    }


def _this_module():
    import sys

    return sys.modules[__name__]


def chunk_rows(num_tokens: int, vocab: int, dtype: torch.dtype, device: torch.device) -> int:
    """Rows per chunk: one ``[n, V]`` buffer in the input dtype within the work budget.

    Several chunks of 16 rows or more take a multiple of 16, so that every chunk's ``[N]`` views start
    64-byte aligned (the JIT specializes pointers on 16-byte alignment, as the compile check assumes).
    """
    rows = auto_chunk_size(num_tokens, vocab, device=device, buffers=1, element_bytes=dtype.itemsize)
    return rows if rows >= num_tokens or rows < 16 else rows // 16 * 16


def fits_budget(num_tokens: int, vocab: int, dtype: torch.dtype, device: torch.device) -> bool:
    return chunk_rows(num_tokens, vocab, dtype, device) >= min(num_tokens, MIN_CHUNK_ROWS)


# ---- the row statistics -----------------------------------------------------------------------------


@dataclass
class RowStats:
    """Per-row outputs of the statistics kernel for N rows: fp32 [N] (top-k [N, KP], ids int32)."""

    max: Tensor
    lse: Tensor
    gold: Tensor
    entropy: Tensor | None
    top_values: Tensor | None  # [N, KP], the first k valid, descending
    top_ids: Tensor | None
    weighted: Tensor | None  # GEM: sum_v c_v z_v
    weight_sum: Tensor | None  # GEM: sum_v c_v
    lse_beta: Tensor | None  # GEM: log sum_v e^{z_v / beta}

    @classmethod
    def empty(cls, n: int, lch: launch.Launch, device) -> RowStats:
        c = lch.constexprs
        f32 = dict(dtype=torch.float32, device=device)

        def vec(present):
            return torch.empty(n, **f32) if present else None

        k = c["TOP_K"] > 0
        return cls(
            vec(True), vec(True), vec(True), vec(c["ENTROPY"]),
            torch.empty(n, c["KP"], **f32) if k else None,
            torch.empty(n, c["KP"], dtype=torch.int32, device=device) if k else None,
            vec(c["GEM"]), vec(c["GEM"]), vec(c["GEM"]),
        )  # fmt: skip

    def rows(self, sl: slice) -> RowStats:
        return RowStats(*(t[sl] if t is not None else None for t in vars(self).values()))


def row_stats(lch: launch.Launch, z: Tensor, y: Tensor, out: RowStats, *, gem_opts=None) -> None:
    """Fill ``out`` (n rows) with the statistics of the logits ``z`` [n, V] and gold ids ``y`` [n]."""
    if z.shape[0] == 0:
        return
    grid = (launch.cdiv(z.shape[0], lch.constexprs["BLOCK_N"]),)
    launch.run(
        lch, grid, Z=z, Y=y, OUT_MAX=out.max, OUT_LSE=out.lse, OUT_GOLD=out.gold, **_gem_outputs(out, lch),
        **({"OUT_ENT": out.entropy} if lch.constexprs["ENTROPY"] else {}),
        **({"OUT_TOPV": out.top_values, "OUT_TOPI": out.top_ids} if lch.constexprs["TOP_K"] else {}),
        N=z.shape[0], V=z.shape[1], s_zn=z.stride(0), **_gem_args(gem_opts),
    )  # fmt: skip


def _gem_outputs(out: RowStats, lch: launch.Launch) -> dict:
    if not lch.constexprs["GEM"]:
        return {}
    return {"OUT_WZ": out.weighted, "OUT_WS": out.weight_sum, "OUT_LSEB": out.lse_beta}


def _gem_args(gem_opts) -> dict:
    if gem_opts is None:
        return {"inv_beta": 1.0, "gem_logsig": 0.0}
    return {"inv_beta": 1.0 / gem_opts.beta, "gem_logsig": float(gem_opts.h == "logsigmoid")}


class ChunkedFusedLinear(TorchFusedLinear):
    """loss = sum_t objective_t(h_t W^T + b) / denominator; gradient in forward, scaled in backward."""

    @staticmethod
    def forward(ctx, h, weight, bias, plan: Plan):
        obj, opts = plan.objective, plan.options
        gem = opts if obj.uses_gem_weights else None
        n_tok, vocab = h.shape[0], weight.shape[0]
        dev = h.device
        need_h, need_w, need_b = plan.needs
        stats_l, grad_l = plan.launches["row_stats"], plan.launches["row_grad"]
        k, bn = stats_l.constexprs["TOP_K"], grad_l.constexprs["BLOCK_N"]
        rows = min(plan.chunk_size, max(n_tok, 1))
        buf = torch.empty(rows, vocab, dtype=h.dtype, device=dev)  # [n_c, V]: the logits, then G, in place
        out = RowStats.empty(n_tok, stats_l, dev)
        topk_mass = torch.empty(n_tok, dtype=torch.float32, device=dev) if k else None  # [N]
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=dev) if need_w else None  # fp32 sum
        grad_b = torch.zeros(vocab, dtype=torch.float32, device=dev) if need_b else None
        loss = torch.zeros((), dtype=torch.float32, device=dev)
        for start in range(0, n_tok, rows):
            sl = slice(start, start + rows)
            h_c, y_c = h[sl], plan.y[sl]
            z = logits_into(buf[: h_c.shape[0]], h_c, weight, bias)  # [n, V] in the input dtype
            part = out.rows(sl)
            row_stats(stats_l, z, y_c, part, gem_opts=gem)
            mass = None
            if k:
                mass = torch.sum((part.top_values[:, :k] - part.lse[:, None]).exp(), -1, out=topk_mass[sl])
            terms = TokenTerms(part.gold, part.lse, mass, part.weighted, part.weight_sum)
            per_token, coef = token_coefficients(obj, opts, terms)
            loss += per_token.sum()
            if not any(plan.needs):
                continue
            coef = coef.scaled(plan.inv_denom)
            zeros = torch.zeros_like(part.lse)  # for a coefficient the objective does not use
            launch.run(
                grad_l, (launch.cdiv(z.shape[0], bn), launch.cdiv(vocab, grad_l.constexprs["BLOCK_V"])),
                Z=z, Y=y_c, LSE=part.lse,
                C_LSE=coef.lse if coef.lse is not None else zeros,
                C_GOLD=coef.gold if coef.gold is not None else zeros,
                **(dict(LSEB=part.lse_beta, C_W=coef.weighted, GOLD=part.gold) if gem is not None else {}),
                N=z.shape[0], V=vocab, s_zn=z.stride(0), **_gem_args(gem),
            )  # fmt: skip
            g = z  # [n, V] G, in the input dtype
            if grad_b is not None:
                grad_b += g.sum(0, dtype=torch.float32)
            if grad_w is not None:
                add_product(grad_w, g.T, h_c)  # fp32 sum over the chunks
            if grad_h is not None:
                torch.mm(g, weight, out=grad_h[sl])  # fp32 accumulation; rows complete: one rounding
        if plan.want_stats:
            terms = TokenTerms(out.gold, out.lse, topk_mass, out.weighted, out.weight_sum)
            stats = summarize(obj, opts, terms, out.entropy, out.gold >= out.max)
        else:
            stats = BatchStats.zeros(dev)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.weight_dtype = weight.dtype
        ctx.used = False
        stats_vec = stats.as_tensor()
        ctx.mark_non_differentiable(stats_vec)
        return loss * plan.inv_denom, stats_vec
