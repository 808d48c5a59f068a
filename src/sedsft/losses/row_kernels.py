"""The Triton row kernels of the chunked engine (host side: :mod:`.chunked_engine`). Imported only when used.

The chunk's logits ``z = h W^T + b`` are already in global memory (cuBLAS wrote them, in the input dtype,
into a reused ``[n, V]`` buffer); these kernels only read and rewrite that buffer, so nothing here is a
matrix product.

- ``row_stats_kernel``: one program per row walks the row in blocks of ``BLOCK_V`` and reads it once for
  every statistic: the online log-sum-exp (max m, s = sum e^{z - m}), the entropy sum sum e^{z - m}(z - m),
  the gold logit (one load at y), a running top-k with its ids, and GEM's tempered sums
  (sum e^{(z - m)/beta} w, the same weighted by z - m, and sum e^{(z - m)/beta}), w = 1 or the logsigmoid
  weights sigmoid(0.01 (z - z_y)).
- ``row_grad_kernel``: one program per (row, block) writes G = c_lse softmax(z) + c_w c + c_gold onehot(y)
  over the logits, in the buffer's dtype (c = GEM's tempered target).

Top-k with 32-bit keys only. Per step the best of (block, running list) is taken and knocked out of where
it came from. A bf16 logit is the upper half of its fp32 value, so for bf16 inputs a key is the value's
16 order-preserving bits over 16 bits of position in the block (BLOCK_V <= 65536): one max-reduction per
step finds the value (decoded exactly from the key) and the position to knock out. fp32/fp16 values do not
fit beside a position, so there a step is a max-reduction for the exact value and a min-reduction for the
first position holding it. Either way the selected values are the exact k largest (ties: the lower id
first), so P_topk is exact. A block whose maximum does not beat the current k-th value skips the top-k
steps (after the first few blocks, almost all of them).
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


@triton.jit
def row_stats_kernel(
    Z, Y, OUT_MAX, OUT_LSE, OUT_GOLD, OUT_ENT, OUT_TOPV, OUT_TOPI, OUT_WZ, OUT_WS, OUT_LSEB,
    V, s_zn, inv_beta, gem_logsig,
    HAS_Y: tl.constexpr, TOP_K: tl.constexpr, KP: tl.constexpr, KEYS16: tl.constexpr,
    ENTROPY: tl.constexpr, GEM: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    """Per-row statistics of the logits Z [n, V]; outputs [n] fp32 (top-k: [n, KP], ids int32).

    GEM: sum_v c_v z_v (OUT_WZ), sum_v c_v (OUT_WS) and log sum_v e^{z_v / beta} (OUT_LSEB) for
    c = softmax(z / beta) * w, w = sigmoid(0.01 (z - z_y)) when ``gem_logsig`` != 0, else 1.
    """
    row = tl.program_id(0).to(tl.int64)
    base = Z + row * s_zn
    gold = 0.0
    if HAS_Y:
        gold = tl.load(base + tl.load(Y + row)).to(tl.float32)
    m = _M0
    s = 0.0
    ent = 0.0
    sb = 0.0  # sum e^{(z - m)/beta}
    aw = 0.0  # sum e^{(z - m)/beta} w
    awz = 0.0  # sum e^{(z - m)/beta} w (z - m)
    lanes = tl.arange(0, BLOCK_V)
    kidx = tl.arange(0, KP)
    run_v = tl.full((KP,), float("-inf"), tl.float32)  # the running top-k, descending; -inf: empty
    run_i = tl.zeros((KP,), tl.int32)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + lanes
        ok = cols < V
        z = tl.load(base + cols, mask=ok, other=float("-inf")).to(tl.float32)  # [BLOCK_V]
        bmax = tl.max(z, axis=0)
        m_new = tl.maximum(m, bmax)
        shift = m - m_new  # <= 0
        zs = tl.where(ok, z - m_new, 0.0)
        e = tl.exp(z - m_new)  # 0 on masked columns
        r = tl.exp(shift)
        if ENTROPY:  # sum e^{z - m} (z - m), rebased to the new max
            ent = r * (ent + shift * s) + tl.sum(e * zs, axis=0)
        s = r * s + tl.sum(e, axis=0)
        if GEM:
            eb = tl.where(ok, tl.exp(zs * inv_beta), 0.0)
            rb = tl.exp(shift * inv_beta)
            sb = rb * sb + tl.sum(eb, axis=0)
            if gem_logsig != 0:
                eb = eb * tl.sigmoid(0.01 * (z - gold))
            awz = rb * (awz + shift * aw) + tl.sum(eb * zs, axis=0)
            aw = rb * aw + tl.sum(eb, axis=0)
        if TOP_K > 0:
            kth = tl.min(tl.where(kidx < TOP_K, run_v, float("inf")), axis=0)
            if bmax > kth:  # the block holds a value above the current k-th: merge
                if KEYS16:
                    keys = tl.where(ok, _key16(z, lanes, BLOCK_V), _KEY_EMPTY)
                else:
                    x = z
                new_v = tl.full((KP,), float("-inf"), tl.float32)
                new_i = tl.zeros((KP,), tl.int32)
                for j in tl.static_range(TOP_K):
                    if KEYS16:
                        bv, lane = _unkey16(tl.max(keys, axis=0), BLOCK_V)
                    else:
                        bv = tl.max(x, axis=0)
                        lane = tl.min(tl.where(x == bv, lanes, BLOCK_V), axis=0)
                    rv = tl.max(run_v, axis=0)
                    slot = tl.min(tl.where(run_v == rv, kidx, KP), axis=0)
                    take = bv > rv  # ties: the running entry, which has the lower id
                    rid = tl.sum(tl.where(kidx == slot, run_i, 0), axis=0)
                    new_v = tl.where(kidx == j, tl.maximum(bv, rv), new_v)
                    new_i = tl.where(kidx == j, tl.where(take, v0 + lane, rid), new_i)
                    out_lane = tl.where(take, lane, -1)  # knock out of the block, or (-1: none)
                    out_slot = tl.where(take, -1, slot)  # of the running list
                    if KEYS16:
                        keys = tl.where(lanes == out_lane, _KEY_EMPTY, keys)
                    else:
                        x = tl.where(lanes == out_lane, float("-inf"), x)
                    run_v = tl.where(kidx == out_slot, float("-inf"), run_v)
                run_v = new_v
                run_i = new_i
        m = m_new
    tl.store(OUT_MAX + row, m)
    tl.store(OUT_LSE + row, m + tl.log(s))
    if HAS_Y:
        tl.store(OUT_GOLD + row, gold)
    if ENTROPY:
        tl.store(OUT_ENT + row, tl.log(s) - ent / s)
    if GEM:
        tl.store(OUT_WS + row, aw / sb)
        tl.store(OUT_WZ + row, m * (aw / sb) + awz / sb)  # sum_v c_v z_v = m sum c + sum c (z - m)
        tl.store(OUT_LSEB + row, m * inv_beta + tl.log(sb))
    if TOP_K > 0:
        tl.store(OUT_TOPV + row * KP + kidx, run_v)
        tl.store(OUT_TOPI + row * KP + kidx, run_i)


@triton.jit
def row_grad_kernel(
    Z, Y, LSE, C_LSE, C_GOLD, LSEB, C_W, GOLD, V, s_zn, inv_beta, gem_logsig,
    GEM: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    """G = c_lse e^{z - lse} + c_w e^{z/beta - lse_beta} w + c_gold onehot(y), written over Z [n, V]."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    ok = cols < V
    at = Z + row * s_zn + cols
    z = tl.load(at, mask=ok, other=0.0).to(tl.float32)  # [BLOCK_V]
    g = tl.load(C_LSE + row) * tl.exp(z - tl.load(LSE + row))
    if GEM:
        c = tl.exp(z * inv_beta - tl.load(LSEB + row))
        if gem_logsig != 0:
            c = c * tl.sigmoid(0.01 * (z - tl.load(GOLD + row)))
        g += tl.load(C_W + row) * c
    g += tl.where(cols == tl.load(Y + row), tl.load(C_GOLD + row), 0.0)
    tl.store(at, g.to(Z.dtype.element_ty), mask=ok)
