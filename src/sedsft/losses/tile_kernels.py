"""The Triton kernels of the fused engine (host side: :mod:`.recompute_engine`). Imported only when used.

Three kernels, all on tiles of ``z = h W^T + b`` computed on chip with ``tl.dot`` (fp32 accumulation);
no ``[N, V]`` tensor is ever written to global memory.

- ``stats_kernel`` (forward): one program per (token tile, vocabulary split) walks the split's vocabulary
  tiles and folds each logit tile into running per-row statistics: the online log-sum-exp (max m, sum
  s = sum e^{z - m}), the entropy sum sum e^{z - m} (z - m), the gold logit, a running top-k, and GEM's
  second temperature (sum e^{(z - m)/beta} w, and the same weighted by z - m). The host merges the splits.
- ``grad_kernel`` (backward): one program per (token tile, vocabulary tile) recomputes the logit tile,
  forms G = c_lse * softmax(z) + c_w * softmax(z / beta) * w + c_gold * onehot(y) from per-token
  coefficients, and adds G W into the fp32 hidden gradient and G^T h into an fp32 weight-gradient slab.
- ``gold_kernel``: the gold logits alone (GEM's logsigmoid weights need z_y before the sweep).

Top-k without sorting: a logit and its column are packed into one int64 whose order is the logit's
(ties: the lower id first), so each of the k steps is one max-reduction over the tile and the running
list together, and a selected key is knocked out by equality (keys are unique).

Compile rules kept for real GPUs: block shapes are ``tl.constexpr`` powers of two with ``tl.dot`` blocks
>= 16, every ragged edge is masked, and no control flow depends on tensor values. Under
``TRITON_INTERPRET=1`` (CPU tests) ``UPCAST`` feeds ``tl.dot`` fp32 copies of bf16/fp16 tiles: the
interpreter of Triton 3.9 multiplies bf16 tiles as raw integers.
"""

from __future__ import annotations

import triton
import triton.language as tl

_SENTINEL = tl.constexpr(-9223372036854775807 - 1)  # below every packed key: an empty top-k slot
_M0 = tl.constexpr(-1.0e30)  # the running max before any tile: finite, so (m - m_new) * 0 stays 0


@triton.jit
def _dot(a, b, acc, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PRECISION)


@triton.jit
def _logits_tile(
    H, W, BIAS, rows, cols, row_ok, col_ok, D, s_hn, s_hd, s_wv, s_wd,
    HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """z [BLOCK_B, BLOCK_V] fp32 for the given rows of h and columns (vocabulary rows) of W."""
    acc = tl.zeros((BLOCK_B, BLOCK_V), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        dd = d0 + tl.arange(0, BLOCK_D)
        d_ok = dd < D
        h = tl.load(
            H + rows[:, None] * s_hn + dd[None, :] * s_hd, mask=row_ok[:, None] & d_ok[None, :], other=0.0
        )
        w = tl.load(
            W + cols[None, :] * s_wv + dd[:, None] * s_wd, mask=col_ok[None, :] & d_ok[:, None], other=0.0
        )
        acc = _dot(h, w, acc, UPCAST, PRECISION)  # [BLOCK_B, BLOCK_V]
    if HAS_BIAS:
        acc += tl.load(BIAS + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit
def _pack(z, cols):
    """int64 keys ordered as the fp32 logits z, ties broken towards the lower column."""
    bits = z.to(tl.int32, bitcast=True)
    ordered = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)  # negative floats: reverse their order
    return (ordered.to(tl.int64) << 32) | (0x7FFFFFFF - cols).to(tl.int64)


@triton.jit
def _unpack(keys):
    """(logits fp32, columns int32) of packed keys; empty slots give -inf."""
    hi = (keys >> 32).to(tl.int32)
    bits = tl.where(hi >= 0, hi, hi ^ 0x7FFFFFFF)
    values = tl.where(keys == _SENTINEL, float("-inf"), bits.to(tl.float32, bitcast=True))
    cols = 0x7FFFFFFF - (keys & 0x7FFFFFFF).to(tl.int32)
    return values, cols


@triton.jit
def stats_kernel(
    H, W, BIAS, Y, GOLDW,
    OUT_M, OUT_S, OUT_ENT, OUT_GOLD, OUT_SB, OUT_AW, OUT_AWZ, OUT_TOPV, OUT_TOPI,
    N, V, D, V_SPLIT, s_hn, s_hd, s_wv, s_wd, inv_beta,
    HAS_BIAS: tl.constexpr, HAS_Y: tl.constexpr, TOP_K: tl.constexpr, KP: tl.constexpr,
    ENTROPY: tl.constexpr, GEM: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Per-row statistics of one vocabulary split; outputs are [S, N] (top-k: [S, N, KP]).

    GEM: 0 = none, 1 = linear (w = 1), 2 = logsigmoid (w = sigmoid(0.01 (z - z_y)), z_y from GOLDW).
    """
    pid_b = tl.program_id(0)
    split = tl.program_id(1)
    rows = (pid_b * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    row_ok = rows < N
    if HAS_Y:
        y = tl.load(Y + rows, mask=row_ok, other=-1)
    if GEM == 2:
        goldw = tl.load(GOLDW + rows, mask=row_ok, other=0.0)
    m = tl.full((BLOCK_B,), _M0, tl.float32)
    s = tl.zeros((BLOCK_B,), tl.float32)
    ent = tl.zeros((BLOCK_B,), tl.float32)
    gold = tl.zeros((BLOCK_B,), tl.float32)
    sb = tl.zeros((BLOCK_B,), tl.float32)
    aw = tl.zeros((BLOCK_B,), tl.float32)
    awz = tl.zeros((BLOCK_B,), tl.float32)
    kcol = tl.arange(0, KP)[None, :]
    top = tl.full((BLOCK_B, KP), _SENTINEL, tl.int64)
    v_start = split * V_SPLIT
    v_end = tl.minimum(v_start + V_SPLIT, V)
    for v0 in range(v_start, v_end, BLOCK_V):
        cols = (v0 + tl.arange(0, BLOCK_V)).to(tl.int64)
        col_ok = cols < v_end
        acc = _logits_tile(
            H, W, BIAS, rows, cols, row_ok, col_ok, D, s_hn, s_hd, s_wv, s_wd,
            HAS_BIAS, UPCAST, PRECISION, BLOCK_B, BLOCK_V, BLOCK_D,
        )  # fmt: skip
        z = tl.where(col_ok[None, :], acc, float("-inf"))  # [BLOCK_B, BLOCK_V]
        m_new = tl.maximum(m, tl.max(z, axis=1))
        shift = m - m_new  # <= 0
        zs = tl.where(col_ok[None, :], z - m_new[:, None], 0.0)
        e = tl.exp(z - m_new[:, None])  # 0 on masked columns
        r = tl.exp(shift)
        if ENTROPY:  # sum e^{z - m} (z - m), rebased to the new max
            ent = r * (ent + shift * s) + tl.sum(e * zs, axis=1)
        s = r * s + tl.sum(e, axis=1)
        if HAS_Y:
            gold += tl.sum(tl.where(cols[None, :] == y[:, None], z, 0.0), axis=1)
        if GEM > 0:
            eb = tl.exp(zs * inv_beta)
            eb = tl.where(col_ok[None, :], eb, 0.0)
            rb = tl.exp(shift * inv_beta)
            if GEM == 2:
                sb = rb * sb + tl.sum(eb, axis=1)
                eb = eb * tl.sigmoid(0.01 * (z - goldw[:, None]))
            awz = rb * (awz + shift * aw) + tl.sum(eb * zs, axis=1)
            aw = rb * aw + tl.sum(eb, axis=1)
        if TOP_K > 0:
            keys = tl.where(col_ok[None, :], _pack(z, cols.to(tl.int32)[None, :]), _SENTINEL)
            new = tl.full((BLOCK_B, KP), _SENTINEL, tl.int64)
            for j in tl.static_range(TOP_K):
                best = tl.maximum(tl.max(keys, axis=1), tl.max(top, axis=1))  # [BLOCK_B]
                new = tl.where(kcol == j, best[:, None], new)
                keys = tl.where(keys == best[:, None], _SENTINEL, keys)
                top = tl.where(top == best[:, None], _SENTINEL, top)
            top = new
        m = m_new
    out = split * N + rows
    tl.store(OUT_M + out, m, mask=row_ok)
    tl.store(OUT_S + out, s, mask=row_ok)
    if ENTROPY:
        tl.store(OUT_ENT + out, ent, mask=row_ok)
    if HAS_Y:
        tl.store(OUT_GOLD + out, gold, mask=row_ok)
    if GEM > 0:
        tl.store(OUT_AW + out, aw, mask=row_ok)
        tl.store(OUT_AWZ + out, awz, mask=row_ok)
    if GEM == 2:
        tl.store(OUT_SB + out, sb, mask=row_ok)
    if TOP_K > 0:
        values, ids = _unpack(top)
        at = out[:, None] * KP + kcol
        tl.store(OUT_TOPV + at, values, mask=row_ok[:, None])
        tl.store(OUT_TOPI + at, ids, mask=row_ok[:, None])


@triton.jit
def grad_kernel(
    H, W, BIAS, Y, LSE, C_LSE, C_GOLD, LSEB, C_W, GOLDW, DH, DW, DB,
    N, V, D, v_lo, v_hi, s_hn, s_hd, s_wv, s_wd, inv_beta,
    HAS_BIAS: tl.constexpr, GEM: tl.constexpr, COMPUTE_DH: tl.constexpr, COMPUTE_DW: tl.constexpr,
    COMPUTE_DB: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr, GROUP_B: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Adds G W into DH [N, D] and G^T h into DW [v_hi - v_lo, D] (both fp32), sum_t G into DB [V]."""
    # grouped order: consecutive programs share GROUP_B token tiles, so h and W tiles are reused from L2
    pid = tl.program_id(0)
    n_b = tl.cdiv(N, BLOCK_B)
    n_v = tl.cdiv(v_hi - v_lo, BLOCK_V)
    per_group = GROUP_B * n_v
    first_b = (pid // per_group) * GROUP_B
    group = tl.minimum(n_b - first_b, GROUP_B)
    pid_b = first_b + (pid % per_group) % group
    pid_v = (pid % per_group) // group
    rows = (pid_b * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    cols = (v_lo + pid_v * BLOCK_V + tl.arange(0, BLOCK_V)).to(tl.int64)
    row_ok = rows < N
    col_ok = cols < v_hi
    z = _logits_tile(
        H, W, BIAS, rows, cols, row_ok, col_ok, D, s_hn, s_hd, s_wv, s_wd,
        HAS_BIAS, UPCAST, PRECISION, BLOCK_B, BLOCK_V, BLOCK_D,
    )  # fmt: skip
    lse = tl.load(LSE + rows, mask=row_ok, other=0.0)
    g = tl.load(C_LSE + rows, mask=row_ok, other=0.0)[:, None] * tl.exp(
        z - lse[:, None]
    )  # [BLOCK_B, BLOCK_V]
    if GEM > 0:
        c = tl.exp(z * inv_beta - tl.load(LSEB + rows, mask=row_ok, other=0.0)[:, None])
        if GEM == 2:
            c = c * tl.sigmoid(0.01 * (z - tl.load(GOLDW + rows, mask=row_ok, other=0.0)[:, None]))
        g += tl.load(C_W + rows, mask=row_ok, other=0.0)[:, None] * c
    y = tl.load(Y + rows, mask=row_ok, other=-1)
    g += tl.where(cols[None, :] == y[:, None], tl.load(C_GOLD + rows, mask=row_ok, other=0.0)[:, None], 0.0)
    g = tl.where(row_ok[:, None] & col_ok[None, :], g, 0.0)
    if COMPUTE_DB:
        tl.atomic_add(DB + cols, tl.sum(g, axis=0), mask=col_ok, sem="relaxed")
    g = g.to(H.dtype.element_ty)  # the products run in the input dtype, accumulated in fp32
    for d0 in range(0, D, BLOCK_D):
        dd = d0 + tl.arange(0, BLOCK_D)
        d_ok = dd < D
        if COMPUTE_DH:
            w = tl.load(
                W + cols[:, None] * s_wv + dd[None, :] * s_wd, mask=col_ok[:, None] & d_ok[None, :], other=0.0
            )
            part = _dot(
                g, w, tl.zeros((BLOCK_B, BLOCK_D), tl.float32), UPCAST, PRECISION
            )  # [BLOCK_B, BLOCK_D]
            tl.atomic_add(
                DH + rows[:, None] * D + dd[None, :],
                part,
                mask=row_ok[:, None] & d_ok[None, :],
                sem="relaxed",
            )
        if COMPUTE_DW:
            h = tl.load(
                H + rows[:, None] * s_hn + dd[None, :] * s_hd, mask=row_ok[:, None] & d_ok[None, :], other=0.0
            )
            part = _dot(
                tl.trans(g), h, tl.zeros((BLOCK_V, BLOCK_D), tl.float32), UPCAST, PRECISION
            )  # [BLOCK_V, BLOCK_D]
            at = (cols - v_lo)[:, None] * D + dd[None, :]
            tl.atomic_add(DW + at, part, mask=col_ok[:, None] & d_ok[None, :], sem="relaxed")


@triton.jit
def gold_kernel(
    H, W, BIAS, Y, OUT, N, D, s_hn, s_hd, s_wv, s_wd,
    HAS_BIAS: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """z_y = h . W[y] + b[y] per row, fp32."""
    rows = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    row_ok = rows < N
    y = tl.load(Y + rows, mask=row_ok, other=0).to(tl.int64)
    acc = tl.zeros((BLOCK_B,), tl.float32)
    for d0 in range(0, D, BLOCK_D):
        dd = d0 + tl.arange(0, BLOCK_D)
        ok = row_ok[:, None] & (dd < D)[None, :]
        h = tl.load(H + rows[:, None] * s_hn + dd[None, :] * s_hd, mask=ok, other=0.0).to(tl.float32)
        w = tl.load(W + y[:, None] * s_wv + dd[None, :] * s_wd, mask=ok, other=0.0).to(tl.float32)
        acc += tl.sum(h * w, axis=1)
    if HAS_BIAS:
        acc += tl.load(BIAS + y, mask=row_ok, other=0.0).to(tl.float32)
    tl.store(OUT + rows, acc, mask=row_ok)
