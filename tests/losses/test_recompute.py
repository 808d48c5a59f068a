"""The recompute engine's kernels under ``TRITON_INTERPRET=1`` on CPU tensors, against the logits path and torch.

Shapes are small (the interpreter runs each program in numpy) but span several token tiles, vocabulary
tiles, vocabulary splits and backward slabs (interpreter tiles: 16 tokens x 32 columns x 16; a budget of
0.012 MB gives slabs of 64 columns at ~46 fp32 rows), with odd sizes so that every edge is ragged.
"""

from dataclasses import replace

import pytest
import torch

from sedsft import losses
from sedsft.losses import naive, recompute_engine

from .cases import EXACT_TOLERANCES, OBJECTIVE_CASES, case_id
from .test_fused import grads, logits_path, make_inputs

pytest.importorskip("triton")

SHAPE = dict(B=3, T=23, d=20, V=97)  # ~46 scored rows: 3 token tiles; 4 vocabulary tiles in 2 splits
SLABS = {"one slab": None, "two slabs": "0.012"}  # SEDSFT_FUSED_BUDGET_MB: [N, 64] G buffers, 2 slabs


@pytest.fixture(autouse=True, scope="module")
def interpreter():
    """tests/conftest.py sets TRITON_INTERPRET=1 before anything imports triton; keep it set here."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_INTERPRET", "1")
        yield


def _slabs(monkeypatch, budget):
    if budget is None:
        monkeypatch.delenv("SEDSFT_FUSED_BUDGET_MB", raising=False)
    else:
        monkeypatch.setenv("SEDSFT_FUSED_BUDGET_MB", budget)


def recompute_path(name, labels, **kw):
    return lambda h, w, b: losses.fused_linear(h, w, labels, objective=name, bias=b, impl="recompute", **kw)


def test_slab_budget():
    """The G buffer [N, slab] stays within the budget, in whole tiles, at least one tile wide."""
    cpu = torch.device("cpu")
    assert recompute_engine.slab_columns(46, 97, torch.float32, cpu, 32) == 128  # the default: one slab
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEDSFT_FUSED_BUDGET_MB", "0.012")
        assert recompute_engine.slab_columns(46, 97, torch.float32, cpu, 32) == 64  # 46 x 68 fp32 fit
        assert recompute_engine.slab_columns(10_000, 97, torch.float32, cpu, 32) == 32  # never below a tile
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEDSFT_FUSED_BUDGET_MB", "256")
        cols = recompute_engine.slab_columns(16384, 152064, torch.bfloat16, torch.device("cuda"), 128)
        assert cols == 8192 and 16384 * cols * 2 <= 256 * 2**20


@pytest.mark.parametrize("slabs", SLABS, ids=list(SLABS))
@pytest.mark.parametrize("case", OBJECTIVE_CASES, ids=case_id)
def test_fp32_parity_with_logits_path(case, slabs, monkeypatch):
    """Loss, the three gradients (through a scaled loss) and every logged statistic, from one call."""
    _slabs(monkeypatch, SLABS[slabs])
    name, opts = case
    (_, atol, rtol) = EXACT_TOLERANCES[1]
    hidden, weight, b, labels = make_inputs(**SHAPE, dtype=torch.float32, bias=True)
    stats = {}

    def run(impl):
        def fn(h, w, bb):
            if impl == "logits":
                out = losses.objective_loss(name, h @ w.T + bb, labels, return_stats=True, **opts)
            else:
                out = losses.fused_linear(
                    h, w, labels, objective=name, bias=bb, impl=impl, return_stats=True, **opts
                )
            stats[impl] = out.stats.as_tensor()
            return 2.5 * out.loss  # the incoming gradient is 2.5, not 1

        return grads(fn, hidden, weight, b)

    for r, g in zip(run("logits"), run("recompute")):
        torch.testing.assert_close(g, r, atol=atol, rtol=rtol)
    torch.testing.assert_close(stats["recompute"], stats["logits"], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("top_k", [1, 8])
def test_sed_top_k_parity(top_k, monkeypatch):
    """SED's mask at k = 1 and 8 (k = 2, 3 are in the objective table); no bias, two slabs."""
    _slabs(monkeypatch, "0.012")
    hidden, weight, _, labels = make_inputs(**SHAPE, dtype=torch.float32, bias=False, seed=top_k)
    opts = dict(tau=0.6, top_k=top_k, lam=1.5)
    ref = grads(logits_path("sed", labels, **opts), hidden, weight, None)
    got = grads(recompute_path("sed", labels, **opts), hidden, weight, None)
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r, atol=2e-5, rtol=2e-4)


@pytest.mark.parametrize("case", OBJECTIVE_CASES, ids=case_id)
def test_bf16_no_worse_than_naive_bf16(case, monkeypatch):
    """|recompute - exact| <= |naive bf16 - exact| + tol for the loss, and the same for each gradient's norm."""
    _slabs(monkeypatch, "0.006")  # bf16: [N, 64] G buffers, two slabs
    name, opts = case
    hidden, weight, b, labels = make_inputs(**SHAPE, dtype=torch.bfloat16, bias=True, seed=5)
    exact = grads(logits_path(name, labels, **opts), hidden.double(), weight.double(), b.double())
    nai = grads(lambda h, w, bb: naive.NAIVE[name](h @ w.T + bb, labels, **opts), hidden, weight, b)
    got = grads(recompute_path(name, labels, **opts), hidden, weight, b)
    assert got[0].dtype == torch.float32 and all(g.dtype == torch.bfloat16 for g in got[1:])
    assert abs(got[0].double() - exact[0]) <= abs(nai[0].double() - exact[0]) + 1e-6
    for e, n, g in zip(exact[1:], nai[1:], got[1:]):
        assert (g.double() - e).norm() <= (n.double() - e).norm() + 1e-6


def test_gradients_are_deterministic(monkeypatch):
    """No atomics: two runs give bitwise-equal gradients (bf16, bias, two slabs)."""
    _slabs(monkeypatch, "0.006")
    hidden, weight, b, labels = make_inputs(**SHAPE, dtype=torch.bfloat16, bias=True, seed=3)
    first = grads(recompute_path("sed", labels, tau=0.5), hidden, weight, b)
    second = grads(recompute_path("sed", labels, tau=0.5), hidden, weight, b)
    assert all(torch.equal(x, y) for x, y in zip(first, second))


def test_engine_launches_the_given_configuration():
    """A plan's launches are what runs: the CUDA list's smallest fp32 tiles, not the interpreter's, run here."""
    hidden, weight, b, labels = make_inputs(**SHAPE, dtype=torch.float32, bias=True, seed=7)
    opts = dict(tau=0.5)
    ref = grads(logits_path("sed", labels, **opts), hidden, weight, b)
    options = recompute_engine.launch_options(
        dtype=torch.float32, objective="sed", top_k=2, frozen_head=False, d=20, vocab=97
    )
    picks = {name: opts_[-1] for name, opts_ in options.items()}
    assert all(p.constexprs["BLOCK_B"] != recompute_engine.INTERPRETER_TILES.b for p in picks.values())
    seen = []
    real = recompute_engine.launch.run

    def spy(lch, grid, **args):
        seen.append(lch)
        return real(lch, grid, **args)

    def fn(h, w, bb):
        obj = losses.get_objective("sed")
        idx, y = losses.logits.scored_rows(labels, vocab_size=97, ignore_index=-100)
        rows = h.reshape(-1, 20).index_select(0, idx)
        plan = losses.plan.Plan(
            obj, obj.options(**opts), y, torch.tensor(1.0 / y.numel()), False, (True,) * 3
        )
        plan = replace(plan, launches=picks)
        return recompute_engine.RecomputeFusedLinear.apply(rows, w, bb, plan)[0]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(recompute_engine.launch, "run", spy)
        got = grads(fn, hidden, weight, b)
    assert {id(lch) for lch in seen} == {id(picks["tile_stats"]), id(picks["tile_grad"])}
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r, atol=2e-5, rtol=2e-4)


def test_launch_options_contract():
    """Every kernel, every call class: configurations in preference order, largest tiles first."""
    for dtype in (torch.bfloat16, torch.float32):
        for objective, top_k in (("ce", None), ("sed", 8), ("gem", 1)):
            options = recompute_engine.launch_options(
                dtype=dtype, objective=objective, top_k=top_k, frozen_head=False, d=3584, vocab=152064
            )
            assert set(options) == {"tile_stats", "tile_grad"} | (
                {"tile_gold"} if objective == "gem" else set()
            )
            for configs in options.values():
                areas = [c.constexprs["BLOCK_B"] * c.constexprs.get("BLOCK_V", 1) for c in configs]
                assert areas == sorted(areas, reverse=True) and len(configs) >= 2
            stats = options["tile_stats"][0]
            assert stats.constexprs["TOP_K"] == (top_k or 0) and stats.constexprs["UPCAST"] is False


@pytest.mark.parametrize("top_k", [1, 2, 3, 8])
def test_token_stats_same_on_both_engines(top_k):
    hidden, weight, b, labels = make_inputs(
        1, 45, 20, 97, dtype=torch.float32, bias=top_k % 2 == 1, seed=top_k
    )
    rows, y = hidden[0], labels[0].clamp(min=0)
    fw = recompute_engine.forward_stats(rows, weight, b, y, top_k=top_k, ids=True, entropy=True)
    ref = losses.token_stats(rows, weight, y, bias=b, top_k=top_k, impl="torch")
    assert fw.top_values.shape == (45, top_k) and fw.top_ids.dtype == torch.long
    assert torch.equal(fw.top_ids, ref.top_ids)
    torch.testing.assert_close(fw.top_values - fw.lse[:, None], ref.top_logp, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(fw.entropy, ref.entropy, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(fw.gold - fw.lse, ref.logp, atol=2e-5, rtol=1e-5)


def test_top_k_ties_take_the_lower_column():
    """Small integers make every logit exact and many of them equal: the k largest, the lower column first,
    within a tile, across tiles and across splits (70 columns: 3 tiles in 2 splits), as a stable sort does."""
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(-2, 3, (37, 16), generator=g).float()
    weight = torch.randint(-1, 2, (70, 16), generator=g).float()
    weight[[3, 40, 66]] = weight[10].clone()  # whole equal columns too
    fw = recompute_engine.forward_stats(rows, weight, None, None, top_k=8, ids=True, entropy=True)
    exact = (rows @ weight.T).sort(dim=-1, descending=True, stable=True)
    assert torch.equal(fw.top_values, exact.values[:, :8])
    assert torch.equal(fw.top_ids, exact.indices[:, :8])


def test_all_labels_ignored_and_second_backward(monkeypatch):
    hidden, weight, b, labels = make_inputs(2, 6, 20, 37, dtype=torch.float32)
    labels[:] = -100
    loss, gh, gw, gb = grads(recompute_path("sed", labels, tau=0.5), hidden, weight, b)
    assert loss.item() == 0.0 and all(torch.count_nonzero(g) == 0 for g in (gh, gw, gb))
    _slabs(monkeypatch, "0.002")
    hidden, weight, b, labels = make_inputs(2, 9, 20, 37, dtype=torch.float32)
    w = weight.requires_grad_()
    loss = losses.fused_linear(hidden, w, labels, objective="ce", impl="recompute")
    (g1,) = torch.autograd.grad(loss, w, retain_graph=True)  # the tiles are recomputed: a second pass works
    (g2,) = torch.autograd.grad(3 * loss, w)
    torch.testing.assert_close(g2, 3 * g1)


def test_impl_choice(monkeypatch):
    hidden, weight, b, labels = make_inputs(1, 5, 4, 9, dtype=torch.float64)
    with pytest.raises(ValueError, match="fp32, bf16 or fp16"):
        losses.fused_linear(hidden, weight, labels, objective="ce", impl="recompute")
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        losses.fused_linear(hidden.float(), weight.float(), labels, objective="ce", impl="recompute")
    assert losses.fused.resolve_impl("auto", torch.device("cpu"), torch.float32) == "torch"
