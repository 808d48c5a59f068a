"""The Triton tile kernels of the recompute engine (host side: :mod:`.recompute_engine`). Imported only when used.

Every kernel computes tiles of ``z = h W^T + b`` on chip with ``tl.dot`` (fp32 accumulation); no logits
tensor is ever written to global memory, and no kernel uses atomics.

- ``stats_kernel`` (forward): one program per (token tile, vocabulary split) walks the split's vocabulary
  tiles and folds each logit tile into running per-row statistics: the online log-sum-exp (max m, sum
  s = sum e^{z - m}), the entropy sum sum e^{z - m} (z - m), the gold logit, a running top-k with its
  column ids, and GEM's tempered sums (sum e^{(z - m)/beta}, the same times w, and times w (z - m)). The
  host merges the splits.
- ``grad_kernel`` (backward): one program per (token tile, vocabulary tile of a slab) recomputes the logit
  tile and writes G = c_lse softmax(z) + c_w softmax(z / beta) w + c_gold onehot(y) into a ``[N, slab]``
  buffer in the input dtype; cuBLAS then forms G W and G^T h (the host).
- ``gold_kernel``: the gold logits alone (GEM's logsigmoid weights need z_y before the sweep).

Top-k with 32-bit values only, exact. The running list holds the fp32 values and their int32 column ids
([BLOCK_B, KP] each). A tile whose rows all lack a value above their current k-th skips the merge (past
the first tiles, almost every one). Otherwise each of the k steps takes, per row, the tile's largest value
and its first position (one max-reduction with indices, ties to the left), compares it with the running
list's best, keeps the larger (ties: the running entry, whose column is lower) and knocks the
selected element out of where it came from (its position is unique). The selected values are the exact k
largest, so P_topk is exact; the ids are the lowest columns among equal values, as in ``torch.topk`` on
distinct values. No int64 key tile: a tile costs its own registers once, not twice.

Compile rules kept for real GPUs: block shapes are ``tl.constexpr`` powers of two with ``tl.dot`` blocks
>= 16, every ragged edge is masked, the hidden and weight rows are contiguous (unit inner stride), and no
tensor-valued control flow other than the scalar top-k skip. ``has_bias`` and ``gem_logsig`` are run-time
flags (the launch options do not know them). The integers that vary from call to call are not specialized
by the JIT (``do_not_specialize``), so the kernel that runs is the one ``launch.compile_offline`` checked;
the sizes and strides that are multiples of 16 for real models are declared so (``Launch.multiple_of_16``).
Under ``TRITON_INTERPRET=1`` (CPU tests) ``UPCAST`` feeds ``tl.dot`` fp32 copies of bf16/fp16 tiles: the
interpreter of Triton 3.9 multiplies bf16 tiles as raw integers.
"""

from __future__ import annotations

import triton
import triton.language as tl

_M0 = tl.constexpr(-1.0e30)  # the running max before any tile: finite, so (m - m_new) * 0 stays 0


@triton.jit
def _dot(a, b, acc, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PRECISION)


@triton.jit
def _logits_tile(
    H, W, BIAS, rows, cols, row_ok, col_ok, D, s_hn, s_wv, has_bias,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """z [BLOCK_B, BLOCK_V] fp32 for the given rows of h and columns (vocabulary rows) of W."""
    acc = tl.zeros((BLOCK_B, BLOCK_V), dtype=tl.float32)
    h_at = H + rows[:, None] * s_hn
    w_at = W + cols[None, :] * s_wv
    for d0 in range(0, D, BLOCK_D):
        dd = d0 + tl.arange(0, BLOCK_D)
        d_ok = dd < D
        h = tl.load(h_at + dd[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # [BLOCK_B, BLOCK_D]
        w = tl.load(w_at + dd[:, None], mask=col_ok[None, :] & d_ok[:, None], other=0.0)  # [BLOCK_D, BLOCK_V]
        acc = _dot(h, w, acc, UPCAST, PRECISION)
    if has_bias != 0:
        acc += tl.load(BIAS + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit(do_not_specialize=["N", "V", "has_bias", "gem_logsig"])
def stats_kernel(
    H, W, BIAS, Y, GOLDW,
    OUT_M, OUT_S, OUT_ENT, OUT_GOLD, OUT_SB, OUT_AW, OUT_AWZ, OUT_TOPV, OUT_TOPI,
    N, V, D, V_SPLIT, s_hn, s_wv, inv_beta, has_bias, gem_logsig,
    TOP_K: tl.constexpr, KP: tl.constexpr, ENTROPY: tl.constexpr, GEM: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Per-row statistics of one vocabulary split; outputs are [S, N] (top-k: [S, N, KP]).

    GEM: w = 1, or w = sigmoid(0.01 (z - z_y)) with z_y from GOLDW when ``gem_logsig`` != 0.
    """
    pid_b = tl.program_id(0)
    split = tl.program_id(1)
    rows = (pid_b * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    row_ok = rows < N
    y = tl.load(Y + rows, mask=row_ok, other=-1).to(tl.int32)
    if GEM:
        goldw = tl.load(GOLDW + rows, mask=row_ok, other=0.0)
    m = tl.full((BLOCK_B,), _M0, tl.float32)
    s = tl.zeros((BLOCK_B,), tl.float32)
    ent = tl.zeros((BLOCK_B,), tl.float32)
    gold = tl.zeros((BLOCK_B,), tl.float32)
    sb = tl.zeros((BLOCK_B,), tl.float32)  # sum e^{(z - m)/beta}
    aw = tl.zeros((BLOCK_B,), tl.float32)  # sum e^{(z - m)/beta} w
    awz = tl.zeros((BLOCK_B,), tl.float32)  # sum e^{(z - m)/beta} w (z - m)
    lanes = tl.arange(0, BLOCK_V)[None, :]
    kidx = tl.arange(0, KP)[None, :]
    run_v = tl.full((BLOCK_B, KP), float("-inf"), tl.float32)  # the running top-k, descending
    run_i = tl.zeros((BLOCK_B, KP), tl.int32)  # their columns
    v_start = split * V_SPLIT
    v_end = tl.minimum(v_start + V_SPLIT, V)
    for v0 in range(v_start, v_end, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        col_ok = cols < v_end
        acc = _logits_tile(
            H, W, BIAS, rows, cols.to(tl.int64), row_ok, col_ok, D, s_hn, s_wv, has_bias,
            UPCAST, PRECISION, BLOCK_B, BLOCK_V, BLOCK_D,
        )  # fmt: skip
        z = tl.where(col_ok[None, :], acc, float("-inf"))  # [BLOCK_B, BLOCK_V]
        bmax = tl.max(z, axis=1)
        m_new = tl.maximum(m, bmax)
        shift = m - m_new  # <= 0
        zs = tl.where(col_ok[None, :], z - m_new[:, None], 0.0)
        e = tl.exp(z - m_new[:, None])  # 0 on masked columns
        r = tl.exp(shift)
        if ENTROPY:  # sum e^{z - m} (z - m), rebased to the new max
            ent = r * (ent + shift * s) + tl.sum(e * zs, axis=1)
        s = r * s + tl.sum(e, axis=1)
        gold += tl.sum(tl.where(cols[None, :] == y[:, None], z, 0.0), axis=1)
        if GEM:
            eb = tl.where(col_ok[None, :], tl.exp(zs * inv_beta), 0.0)
            rb = tl.exp(shift * inv_beta)
            sb = rb * sb + tl.sum(eb, axis=1)
            if gem_logsig != 0:
                eb = eb * tl.sigmoid(0.01 * (z - goldw[:, None]))
            awz = rb * (awz + shift * aw) + tl.sum(eb * zs, axis=1)
            aw = rb * aw + tl.sum(eb, axis=1)
        if TOP_K > 0:
            kth = tl.min(tl.where(kidx < TOP_K, run_v, float("inf")), axis=1)  # [BLOCK_B]
            beats = tl.where(row_ok & (bmax > kth), 1, 0)
            if tl.max(beats, axis=0) > 0:  # some row of the tile holds a value above its k-th: merge
                x = z
                new_v = tl.full((BLOCK_B, KP), float("-inf"), tl.float32)
                new_i = tl.zeros((BLOCK_B, KP), tl.int32)
                for j in tl.static_range(TOP_K):
                    # [BLOCK_B] the tile's best (exact) and its first position, in one reduction
                    bv, lane = tl.max(x, axis=1, return_indices=True, return_indices_tie_break_left=True)
                    rv = tl.max(run_v, axis=1)  # the running list's best
                    slot = tl.min(tl.where(run_v == rv[:, None], kidx, KP), axis=1)
                    take = bv > rv  # ties: the running entry, which has the lower column
                    rid = tl.sum(tl.where(kidx == slot[:, None], run_i, 0), axis=1)
                    new_v = tl.where(kidx == j, tl.maximum(bv, rv)[:, None], new_v)
                    new_i = tl.where(kidx == j, tl.where(take, v0 + lane, rid)[:, None], new_i)
                    x = tl.where(lanes == tl.where(take, lane, -1)[:, None], float("-inf"), x)  # knock out
                    run_v = tl.where(kidx == tl.where(take, -1, slot)[:, None], float("-inf"), run_v)
                run_v = new_v
                run_i = new_i
        m = m_new
    out = split * N + rows
    tl.store(OUT_M + out, m, mask=row_ok)
    tl.store(OUT_S + out, s, mask=row_ok)
    tl.store(OUT_GOLD + out, gold, mask=row_ok)
    if ENTROPY:
        tl.store(OUT_ENT + out, ent, mask=row_ok)
    if GEM:
        tl.store(OUT_SB + out, sb, mask=row_ok)
        tl.store(OUT_AW + out, aw, mask=row_ok)
        tl.store(OUT_AWZ + out, awz, mask=row_ok)
    if TOP_K > 0:
        at = out[:, None] * KP + kidx
        tl.store(OUT_TOPV + at, run_v, mask=row_ok[:, None])
        tl.store(OUT_TOPI + at, run_i, mask=row_ok[:, None])


@triton.jit(do_not_specialize=["N", "v_lo", "v_hi", "has_bias", "gem_logsig"])
def grad_kernel(
    H, W, BIAS, Y, LSE, C_LSE, C_GOLD, LSEB, C_W, GOLDW, G,
    N, D, v_lo, v_hi, s_hn, s_wv, s_gn, inv_beta, has_bias, gem_logsig,
    GEM: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr, GROUP_B: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """G[:, v - v_lo] for the columns v of [v_lo, v_hi), in G's dtype; G is [N, >= v_hi - v_lo], row stride s_gn."""
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
    local = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)  # columns within the slab
    cols = v_lo + local
    row_ok = rows < N
    col_ok = cols < v_hi
    z = _logits_tile(
        H, W, BIAS, rows, cols.to(tl.int64), row_ok, col_ok, D, s_hn, s_wv, has_bias,
        UPCAST, PRECISION, BLOCK_B, BLOCK_V, BLOCK_D,
    )  # fmt: skip
    lse = tl.load(LSE + rows, mask=row_ok, other=0.0)
    g = tl.load(C_LSE + rows, mask=row_ok, other=0.0)[:, None] * tl.exp(
        z - lse[:, None]
    )  # [BLOCK_B, BLOCK_V]
    if GEM:
        c = tl.exp(z * inv_beta - tl.load(LSEB + rows, mask=row_ok, other=0.0)[:, None])
        if gem_logsig != 0:
            c = c * tl.sigmoid(0.01 * (z - tl.load(GOLDW + rows, mask=row_ok, other=0.0)[:, None]))
        g += tl.load(C_W + rows, mask=row_ok, other=0.0)[:, None] * c
    y = tl.load(Y + rows, mask=row_ok, other=-1).to(tl.int32)
    g += tl.where(cols[None, :] == y[:, None], tl.load(C_GOLD + rows, mask=row_ok, other=0.0)[:, None], 0.0)
    at = G + rows[:, None] * s_gn + local[None, :]
    tl.store(at, g.to(G.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


@triton.jit(do_not_specialize=["N", "has_bias"])
def gold_kernel(
    H, W, BIAS, Y, OUT, N, D, s_hn, s_wv, has_bias, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """z_y = h . W[y] + b[y] per row, fp32."""
    rows = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    row_ok = rows < N
    y = tl.load(Y + rows, mask=row_ok, other=0).to(tl.int64)
    acc = tl.zeros((BLOCK_B,), tl.float32)
    for d0 in range(0, D, BLOCK_D):
        dd = d0 + tl.arange(0, BLOCK_D)
        ok = row_ok[:, None] & (dd < D)[None, :]
        h = tl.load(H + rows[:, None] * s_hn + dd[None, :], mask=ok, other=0.0).to(tl.float32)
        w = tl.load(W + y[:, None] * s_wv + dd[None, :], mask=ok, other=0.0).to(tl.float32)
        acc += tl.sum(h * w, axis=1)
    if has_bias != 0:
        acc += tl.load(BIAS + y, mask=row_ok, other=0.0).to(tl.float32)
    tl.store(OUT + rows, acc, mask=row_ok)
