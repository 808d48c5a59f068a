"""The Triton row kernels of the chunked engine (host side: :mod:`.chunked_engine`). Imported only when used.

The chunk's logits ``z = h W^T + b`` are already in global memory (cuBLAS wrote them, in the input dtype,
into a reused ``[n, V]`` buffer); these kernels only read and rewrite that buffer, so nothing here is a
matrix product.

- ``row_stats_kernel``: one program per ``BLOCK_N`` rows (1 on a GPU; 16 in the interpreter, where a
  program costs Python time) walks them in blocks of ``BLOCK_V`` columns and reads them once for every
  statistic: the online log-sum-exp (max m, s = sum e^{z - m}), the entropy sum sum e^{z - m}(z - m),
  the gold logit (one load at y), a running top-k with its ids, and GEM's tempered sums
  (sum e^{(z - m)/beta} w, the same weighted by z - m, and sum e^{(z - m)/beta}), w = 1 or the logsigmoid
  weights sigmoid(0.01 (z - z_y)).
- ``row_grad_kernel``: one program per ``[BLOCK_N, BLOCK_V]`` tile writes G = c_lse softmax(z) + c_w c + c_gold onehot(y)
  over the logits, in the buffer's dtype (c = GEM's tempered target).

Top-k with 32-bit keys only. Per step the best of (block, running list) is taken and knocked out of where
it came from. A bf16 logit is the upper half of its fp32 value, so for bf16 inputs a key is the value's
16 order-preserving bits over 16 bits of position in the block (BLOCK_V <= 65536): one max-reduction per
step finds the value (decoded exactly from the key) and the position to knock out. fp32/fp16 values do not
fit beside a position, so there a step is a max-reduction for the exact value and a min-reduction for the
first position holding it. Either way the selected values are the exact k largest (ties: the lower id
first), so P_topk is exact. A block whose maximum does not beat the current k-th value skips the top-k
steps (after the first few blocks, almost all of them; with BLOCK_N > 1, when no row's does).
"""

from __future__ import annotations

import triton
import triton.language as tl

_M0 = tl.constexpr(-1.0e30)  # the running max before any block: finite, so (m - m_new) * 0 stays 0
_KEY_EMPTY = tl.constexpr(-2147483647 - 1)  # below every bf16 key: a knocked-out element


@triton.jit
def _key16(z, lanes, BLOCK_V: tl.constexpr):
    """int32 keys of bf16-valued fp32 logits: the value's order in the upper 16 bits, BLOCK_V-1-lane below."""
    bits = z.to(tl.int32, bitcast=True)  # the lower 16 bits are 0: the value came from bf16
    ordered = tl.where(bits >= 0, bits, bits ^ 0x7FFF0000)  # negative floats: reverse their order
    return ordered | (BLOCK_V - 1 - lanes)


@triton.jit
def _unkey16(key, BLOCK_V: tl.constexpr):
    """(the exact fp32 value, the lane) of a key from :func:`_key16`."""
    hi = (key >> 16) << 16  # the value's 16 bits (an arithmetic shift: negative keys stay negative)
    bits = tl.where(hi >= 0, hi, hi ^ 0x7FFF0000)
    return bits.to(tl.float32, bitcast=True), BLOCK_V - 1 - (key - hi)


@triton.jit(do_not_specialize=["N"])  # N: any row count, as compiled offline
def row_stats_kernel(
    Z, Y, OUT_MAX, OUT_LSE, OUT_GOLD, OUT_ENT, OUT_TOPV, OUT_TOPI, OUT_WZ, OUT_WS, OUT_LSEB,
    N, V, s_zn, inv_beta, gem_logsig,
    TOP_K: tl.constexpr, KP: tl.constexpr, KEYS16: tl.constexpr, ENTROPY: tl.constexpr, GEM: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    """Per-row statistics of the logits Z [N, V] (BLOCK_N rows per program); outputs [N] fp32, top-k [N, KP].

    GEM: sum_v c_v z_v (OUT_WZ), sum_v c_v (OUT_WS) and log sum_v e^{z_v / beta} (OUT_LSEB) for
    c = softmax(z / beta) * w, w = sigmoid(0.01 (z - z_y)) when ``gem_logsig`` != 0 (a float: the JIT
    would make an integer 1 a constant), else 1.
    """
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    base = Z + rows[:, None] * s_zn  # [BLOCK_N, 1]
    y = tl.load(Y + rows, mask=row_ok, other=0)
    gold = tl.load(Z + rows * s_zn + y, mask=row_ok, other=0.0).to(tl.float32)  # [BLOCK_N] z_y
    m = tl.full((BLOCK_N,), _M0, tl.float32)
    s = tl.zeros((BLOCK_N,), tl.float32)
    ent = tl.zeros((BLOCK_N,), tl.float32)
    sb = tl.zeros((BLOCK_N,), tl.float32)  # sum e^{(z - m)/beta}
    aw = tl.zeros((BLOCK_N,), tl.float32)  # sum e^{(z - m)/beta} w
    awz = tl.zeros((BLOCK_N,), tl.float32)  # sum e^{(z - m)/beta} w (z - m)
    lanes = tl.arange(0, BLOCK_V)[None, :]
    kidx = tl.arange(0, KP)[None, :]
    run_v = tl.full((BLOCK_N, KP), float("-inf"), tl.float32)  # the running top-k, descending; -inf: empty
    run_i = tl.zeros((BLOCK_N, KP), tl.int32)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + lanes
        ok = row_ok[:, None] & (cols < V)
        z = tl.load(base + cols, mask=ok, other=float("-inf")).to(tl.float32)  # [BLOCK_N, BLOCK_V]
        bmax = tl.max(z, axis=1)
        m_new = tl.maximum(m, bmax)
        shift = m - m_new  # <= 0
        zs = tl.where(ok, z - m_new[:, None], 0.0)
        e = tl.exp(z - m_new[:, None])  # 0 on masked columns
        r = tl.exp(shift)
        if ENTROPY:  # sum e^{z - m} (z - m), rebased to the new max
            ent = r * (ent + shift * s) + tl.sum(e * zs, axis=1)
        s = r * s + tl.sum(e, axis=1)
        if GEM:
            eb = tl.where(ok, tl.exp(zs * inv_beta), 0.0)
            rb = tl.exp(shift * inv_beta)
            sb = rb * sb + tl.sum(eb, axis=1)
            if gem_logsig != 0.0:
                eb = eb * tl.sigmoid(0.01 * (z - gold[:, None]))
            awz = rb * (awz + shift * aw) + tl.sum(eb * zs, axis=1)
            aw = rb * aw + tl.sum(eb, axis=1)
        if TOP_K > 0:
            kth = tl.min(tl.where(kidx < TOP_K, run_v, float("inf")), axis=1)  # [BLOCK_N]
            if tl.max((bmax > kth).to(tl.int32), axis=0) > 0:  # some row's block beats its k-th value: merge
                if KEYS16:
                    keys = tl.where(ok, _key16(z, lanes, BLOCK_V), _KEY_EMPTY)
                else:
                    x = z
                new_v = tl.full((BLOCK_N, KP), float("-inf"), tl.float32)
                new_i = tl.zeros((BLOCK_N, KP), tl.int32)
                for j in tl.static_range(TOP_K):
                    if KEYS16:
                        bv, lane = _unkey16(tl.max(keys, axis=1), BLOCK_V)
                    else:
                        bv = tl.max(x, axis=1)
                        lane = tl.min(tl.where(x == bv[:, None], lanes, BLOCK_V), axis=1)
                    rv = tl.max(run_v, axis=1)
                    slot = tl.min(tl.where(run_v == rv[:, None], kidx, KP), axis=1)
                    take = bv > rv  # ties: the running entry, which has the lower id
                    rid = tl.sum(tl.where(kidx == slot[:, None], run_i, 0), axis=1)
                    # (an exhausted bf16 block decodes its empty key as NaN: not taken, whatever max does)
                    new_v = tl.where(kidx == j, tl.where(take, bv, rv)[:, None], new_v)
                    new_i = tl.where(kidx == j, tl.where(take, v0 + lane, rid)[:, None], new_i)
                    out_lane = tl.where(take, lane, -1)[:, None]  # knock out of the block, or (-1) none
                    out_slot = tl.where(take, -1, slot)[:, None]  # of the running list
                    if KEYS16:
                        keys = tl.where(lanes == out_lane, _KEY_EMPTY, keys)
                    else:
                        x = tl.where(lanes == out_lane, float("-inf"), x)
                    run_v = tl.where(kidx == out_slot, float("-inf"), run_v)
                run_v = new_v
                run_i = new_i
        m = m_new
    s = tl.where(row_ok, s, 1.0)  # rows past N: no 0/0 (nothing is stored for them)
    sb = tl.where(row_ok, sb, 1.0)
    tl.store(OUT_MAX + rows, m, mask=row_ok)
    tl.store(OUT_LSE + rows, m + tl.log(s), mask=row_ok)
    tl.store(OUT_GOLD + rows, gold, mask=row_ok)
    if ENTROPY:
        tl.store(OUT_ENT + rows, tl.log(s) - ent / s, mask=row_ok)
    if GEM:
        tl.store(OUT_WS + rows, aw / sb, mask=row_ok)
        tl.store(OUT_WZ + rows, m * (aw / sb) + awz / sb, mask=row_ok)  # sum c z = m sum c + sum c (z - m)
        tl.store(OUT_LSEB + rows, m * inv_beta + tl.log(sb), mask=row_ok)
    if TOP_K > 0:
        at = rows[:, None] * KP + kidx
        tl.store(OUT_TOPV + at, run_v, mask=row_ok[:, None])
        tl.store(OUT_TOPI + at, run_i, mask=row_ok[:, None])


@triton.jit(do_not_specialize=["N"])
def row_grad_kernel(
    Z, Y, LSE, C_LSE, C_GOLD, LSEB, C_W, GOLD, N, V, s_zn, inv_beta, gem_logsig,
    GEM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    """G = c_lse e^{z - lse} + c_w e^{z/beta - lse_beta} w + c_gold onehot(y), written over Z [N, V]."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    row_ok = rows < N
    ok = row_ok[:, None] & (cols < V)[None, :]
    at = Z + rows[:, None] * s_zn + cols[None, :]
    z = tl.load(at, mask=ok, other=0.0).to(tl.float32)  # [BLOCK_N, BLOCK_V]

    lse = tl.load(LSE + rows, mask=row_ok, other=0.0)
    g = tl.load(C_LSE + rows, mask=row_ok, other=0.0)[:, None] * tl.exp(z - lse[:, None])
    if GEM:
        c = tl.exp(z * inv_beta - tl.load(LSEB + rows, mask=row_ok, other=0.0)[:, None])
        if gem_logsig != 0.0:
            c = c * tl.sigmoid(0.01 * (z - tl.load(GOLD + rows, mask=row_ok, other=0.0)[:, None]))
        g += tl.load(C_W + rows, mask=row_ok, other=0.0)[:, None] * c
    y = tl.load(Y + rows, mask=row_ok, other=-1)
    g += tl.where(cols[None, :] == y[:, None], tl.load(C_GOLD + rows, mask=row_ok, other=0.0)[:, None], 0.0)
    tl.store(at, g.to(Z.dtype.element_ty), mask=ok)
