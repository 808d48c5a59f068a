"""The chunked engine under ``TRITON_INTERPRET=1`` on CPU tensors, against the logits path and torch engine.

The interpreter gets blocks of 16 rows x 32 columns (``chunked_engine.INTERPRETER_BLOCKS``), so V = 97
spans four blocks (the last ragged); chunks of 16 rows split the ~46 scored rows into three, the last
ragged too; chunks of 7 rows give ragged row blocks. The products are torch's (cuBLAS on a GPU), the row
kernels Triton's.
"""

import pytest
import torch

from sedsft import losses
from sedsft.losses import chunked_engine, naive

from .cases import EXACT_TOLERANCES, OBJECTIVE_CASES, case_id
from .test_fused import LargestTensor, grads, logits_path, make_inputs

pytest.importorskip("triton")

SHAPE = dict(B=3, T=23, d=20, V=97)  # ~46 scored rows
CHUNK = 16


@pytest.fixture(autouse=True, scope="module")
def interpreter():
    """tests/conftest.py sets TRITON_INTERPRET=1 before anything imports triton; keep it set here."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_INTERPRET", "1")
        yield


def chunked_path(name, labels, chunk_size=CHUNK, **kw):
    return lambda h, w, b: losses.fused_linear(
        h, w, labels, objective=name, bias=b, impl="chunked", chunk_size=chunk_size, **kw
    )


def test_blocks_and_chunks_are_several():
    block_v = chunked_engine.INTERPRETER_BLOCKS[1]
    assert block_v * 3 < SHAPE["V"] < block_v * 4
    _, _, _, labels = make_inputs(**SHAPE, dtype=torch.float32)
    assert 2 * CHUNK < int((labels[:, 1:] != -100).sum()) < 4 * CHUNK


@pytest.mark.parametrize("case", OBJECTIVE_CASES, ids=case_id)
def test_fp32_parity_with_logits_path(case):
    """Loss, the three gradients (through a scaled loss) and every logged statistic, from one call."""
    name, opts = case
    (_, atol, rtol) = EXACT_TOLERANCES[1]
    hidden, weight, b, labels = make_inputs(**SHAPE, dtype=torch.float32, bias=True)
    stats = {}

    def run(impl):
        def fn(h, w, bb):
            if impl == "logits":
                out = losses.objective_loss(name, h @ w.T + bb, labels, return_stats=True, **opts)
            else:
                out = chunked_path(name, labels, return_stats=True, **opts)(h, w, bb)
            stats[impl] = out.stats.as_tensor()
            return 2.5 * out.loss  # the incoming gradient is 2.5, not 1

        return grads(fn, hidden, weight, b)

    for r, g in zip(run("logits"), run("chunked")):
        torch.testing.assert_close(g, r, atol=atol, rtol=rtol)
    torch.testing.assert_close(stats["chunked"], stats["logits"], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("case", OBJECTIVE_CASES, ids=case_id)
def test_bf16_no_worse_than_naive_bf16(case):
    """In bf16 (logits and G in bf16, as on a GPU), the error vs fp64 is within the naive bf16 path's."""
    name, opts = case
    hidden, weight, b, labels = make_inputs(**SHAPE, dtype=torch.bfloat16, bias=True, seed=5)
    exact = grads(logits_path(name, labels, **opts), hidden.double(), weight.double(), b.double())
    nai = grads(lambda h, w, bb: naive.NAIVE[name](h @ w.T + bb, labels, **opts), hidden, weight, b)
    got = grads(chunked_path(name, labels, **opts), hidden, weight, b)
    assert got[0].dtype == torch.float32 and all(g.dtype == torch.bfloat16 for g in got[1:])
    for e, n, g in zip(exact, nai, got):
        assert (g.double() - e).norm() <= (n.double() - e).norm() * 1.05 + 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("top_k", [1, 2, 3, 8])
def test_top_k_mass_and_ids(dtype, top_k):
    """P_topk, the top-k ids, entropy and gold log-probability against the full logits in the same dtype."""
    hidden, weight, b, labels = make_inputs(1, 45, 20, 97, dtype=dtype, bias=top_k % 2 == 1, seed=top_k)
    rows, y = hidden[0], labels[0].clamp(min=0)
    got = losses.token_stats(rows, weight, y, bias=b, top_k=top_k, impl="chunked", chunk_size=16)
    z = (torch.addmm(b, rows, weight.T) if b is not None else rows @ weight.T).double()  # rounded once
    logp = z.log_softmax(-1)
    top = logp.topk(top_k, dim=-1)
    torch.testing.assert_close(got.top_logp.double(), top.values, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(got.entropy.double(), -(logp.exp() * logp).sum(-1), atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(got.logp.double(), logp.gather(1, y[:, None])[:, 0], atol=2e-5, rtol=1e-5)
    if dtype == torch.float32:  # bf16 logits tie: then any of the tied ids is right
        assert torch.equal(got.top_ids, top.indices)
    assert torch.equal(z.gather(1, got.top_ids), z.gather(1, top.indices))  # the ids hold the top values


def test_top_k_with_ties_counts_each_token():
    """Equal bf16 logits (duplicated head rows) in one block and across blocks: each counts once in P_topk."""
    hidden, weight, _, labels = make_inputs(1, 17, 20, 97, dtype=torch.bfloat16, bias=False, seed=11)
    weight[40] = weight[3]  # same block as nothing else; 3 and 40 in blocks 0 and 1
    weight[5] = weight[3]  # and a tie within block 0
    rows = hidden[0]
    rows[:] = (weight[3].float() * 3).to(torch.bfloat16)  # token 3 (and its twins) on top of every row
    got = losses.token_stats(rows, weight, top_k=4, impl="chunked")
    z = (rows @ weight.T).double()
    want = z.log_softmax(-1).topk(4, dim=-1).values
    torch.testing.assert_close(got.top_logp.double(), want, atol=2e-5, rtol=1e-5)
    assert all(set(r[:3].tolist()) == {3, 5, 40} for r in got.top_ids)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_top_k_when_a_short_last_block_holds_the_maximum(dtype):
    """V = 97: the last block has one column; when it holds each row's maximum, it is merged with k = 8
    and runs out of columns after one step (the rest come from the running list)."""
    hidden, weight, _, _ = make_inputs(1, 9, 20, 97, dtype=dtype, bias=False, seed=8)
    rows = hidden[0]
    weight[96] = (rows.float().mean(0) * 4).to(dtype)  # token 96 on top of (nearly) every row
    got = losses.token_stats(rows, weight, top_k=8, impl="chunked")
    z = (rows @ weight.T).double()
    want = z.log_softmax(-1).topk(8, dim=-1)
    assert (want.indices[:, 0] == 96).sum() >= 5
    torch.testing.assert_close(got.top_logp.double(), want.values, atol=2e-5, rtol=1e-5)
    assert torch.equal(z.gather(1, got.top_ids), z.gather(1, want.indices))


def test_same_as_torch_engine_several_chunk_sizes():
    hidden, weight, b, labels = make_inputs(2, 11, 12, 70, dtype=torch.float32, seed=4)
    ref = grads(
        lambda h, w, bb: losses.fused_linear(
            h, w, labels, objective="sed", bias=bb, tau=0.4, top_k=3, impl="torch", chunk_size=5
        ),
        hidden,
        weight,
        b,
    )
    for chunk in (1, 7, 1000):
        got = grads(chunked_path("sed", labels, chunk_size=chunk, tau=0.4, top_k=3), hidden, weight, b)
        for r, g in zip(ref, got):
            torch.testing.assert_close(g, r, atol=2e-6, rtol=1e-5)


def test_all_labels_ignored_and_second_backward_refused():
    hidden, weight, b, labels = make_inputs(2, 6, 20, 37, dtype=torch.float32)
    labels[:] = -100
    loss, gh, gw, gb = grads(chunked_path("sed", labels, tau=0.5), hidden, weight, b)
    assert loss.item() == 0.0 and all(torch.count_nonzero(g) == 0 for g in (gh, gw, gb))
    hidden, weight, b, labels = make_inputs(2, 9, 20, 37, dtype=torch.float32)
    w = weight.requires_grad_()
    loss = losses.fused_linear(hidden, w, labels, objective="ce", impl="chunked")
    (g1,) = torch.autograd.grad(loss, w, retain_graph=True)
    with pytest.raises(RuntimeError, match="backward through the same loss twice"):
        torch.autograd.grad(loss, w)


def _measured(impl: str, train_hidden: bool, train_weight: bool):
    hidden, weight, b, labels = make_inputs(1, 21, 48, 64, dtype=torch.float32, ignore_frac=0.0)
    hidden.requires_grad_(train_hidden)
    weight.requires_grad_(train_weight)
    with LargestTensor() as mode:
        loss = losses.fused_linear(hidden, weight, labels, objective="sed", tau=0.5, impl=impl)
        loss.backward()
    return mode


@pytest.mark.parametrize("impl", ["chunked", "recompute"])  # both GPU engines (the torch one: test_fused)
def test_frozen_inputs_allocate_no_gradient(impl):
    both, frozen_w, frozen_h = (
        _measured(impl, *train) for train in ((True, True), (True, False), (False, True))
    )
    n_d, v_d = 20 * 48, 64 * 48
    assert both.largest >= v_d > frozen_w.largest  # no [V, d] tensor at all for a frozen head
    assert frozen_w.total <= both.total - v_d
    assert frozen_h.total <= both.total - n_d


def test_chunk_buffer_in_the_input_dtype_and_budget(monkeypatch):
    monkeypatch.setenv("SEDSFT_FUSED_BUDGET_MB", "1")
    cpu = torch.device("cpu")
    assert chunked_engine.chunk_rows(10**6, 152_064, torch.bfloat16, cpu) == 2**20 // (152_064 * 2)
    assert chunked_engine.chunk_rows(10**6, 152_064, torch.float32, cpu) == 2**20 // (152_064 * 4)
    assert not chunked_engine.fits_budget(10**6, 152_064, torch.bfloat16, cpu)  # 3 rows < 128
    assert chunked_engine.fits_budget(2, 152_064, torch.bfloat16, cpu)


def test_impl_names():
    assert losses.IMPLS == ("auto", "torch", "chunked", "recompute", "triton")
    cpu = torch.device("cpu")
    assert losses.fused.resolve_impl("auto", cpu, torch.float32) == "torch"
    assert losses.fused.resolve_impl("triton", cpu, torch.float32, n_rows=40, vocab=97) == "chunked"
    with pytest.raises(ValueError, match="fp32, bf16 or fp16"):
        losses.fused.resolve_impl("chunked", cpu, torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_launch_options_follow_the_contract(dtype):
    """Every call class lists both kernels, each configuration typed in the kernel's argument order."""
    for name in losses.OBJECTIVES:
        for k in (None, 1, 8):
            options = chunked_engine.launch_options(
                dtype=dtype, objective=name, top_k=k, frozen_head=False, d=64, vocab=160
            )
            assert set(options) == {"row_stats", "row_grad"} and all(options.values())
            for lch in [lch for opts in options.values() for lch in opts]:
                assert list(lch.signature) == list(lch.kernel.arg_names)
                assert {a for a, t in lch.signature.items() if t == "constexpr"} == set(lch.constexprs)
                assert set(lch.multiple_of_16) == {"V", "s_zn"}  # 160 = 10 * 16
            stats = options["row_stats"][0].constexprs
            assert stats["TOP_K"] == (k or 0) and stats["ENTROPY"] == (k is not None)
            assert stats["KEYS16"] == (dtype == torch.bfloat16)
            assert stats["GEM"] == losses.get_objective(name).uses_gem_weights
