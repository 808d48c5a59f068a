"""The Triton kernels under ``TRITON_INTERPRET=1`` on CPU tensors, against the logits path and the torch engine.

Shapes are small (the interpreter runs each program in numpy) but span several token tiles, vocabulary
tiles, vocabulary splits and weight-gradient slabs (interpreter tiles: 16 tokens x 32 columns x 16,
slabs of 64 rows), with odd sizes so that every edge is ragged.
"""

import pytest
import torch

from sedsft import losses
from sedsft.losses import naive

from .cases import EXACT_TOLERANCES, OBJECTIVE_CASES, case_id
from .test_fused import LargestTensor, grads, logits_path, make_inputs

pytest.importorskip("triton")

SHAPE = dict(B=3, T=23, d=20, V=97)  # ~46 scored rows: 3 token tiles; 4 vocabulary tiles in 2 splits


@pytest.fixture(autouse=True, scope="module")
def interpreter():
    """tests/conftest.py sets TRITON_INTERPRET=1 before anything imports triton; keep it set here."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_INTERPRET", "1")
        yield


def triton_path(name, labels, **kw):
    return lambda h, w, b: losses.fused_linear(h, w, labels, objective=name, bias=b, impl="triton", **kw)


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
                out = losses.fused_linear(
                    h, w, labels, objective=name, bias=bb, impl=impl, return_stats=True, **opts
                )
            stats[impl] = out.stats.as_tensor()
            return 2.5 * out.loss  # the incoming gradient is 2.5, not 1

        return grads(fn, hidden, weight, b)

    for r, g in zip(run("logits"), run("triton")):
        torch.testing.assert_close(g, r, atol=atol, rtol=rtol)
    torch.testing.assert_close(stats["triton"], stats["logits"], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("case", OBJECTIVE_CASES, ids=case_id)
def test_bf16_no_worse_than_naive_bf16(case):
    """|triton - exact| <= |naive bf16 - exact| + tol for the loss, and the same for each gradient's norm."""
    name, opts = case
    hidden, weight, _, labels = make_inputs(**SHAPE, dtype=torch.bfloat16, bias=False, seed=5)
    exact = grads(logits_path(name, labels, **opts), hidden.double(), weight.double(), None)
    nai = grads(lambda h, w, _: naive.NAIVE[name](h @ w.T, labels, **opts), hidden, weight, None)
    got = grads(triton_path(name, labels, **opts), hidden, weight, None)
    assert got[0].dtype == torch.float32 and got[1].dtype == got[2].dtype == torch.bfloat16
    assert abs(got[0].double() - exact[0]) <= abs(nai[0].double() - exact[0]) + 1e-6
    for e, n, g in zip(exact[1:], nai[1:], got[1:]):
        assert (g.double() - e).norm() <= (n.double() - e).norm() + 1e-6


@pytest.mark.parametrize("top_k", [1, 2, 3, 8])
def test_token_stats_same_on_both_engines(top_k):
    hidden, weight, b, labels = make_inputs(
        1, 45, 20, 97, dtype=torch.float32, bias=top_k % 2 == 1, seed=top_k
    )
    rows, y = hidden[0], labels[0].clamp(min=0)
    tri = losses.token_stats(rows, weight, y, bias=b, top_k=top_k, impl="triton")
    ref = losses.token_stats(rows, weight, y, bias=b, top_k=top_k, impl="torch")
    assert tri.top_logp.shape == (45, top_k) and tri.top_ids.dtype == torch.long
    assert torch.equal(tri.top_ids, ref.top_ids)
    for f in ("top_logp", "entropy", "logp"):
        torch.testing.assert_close(getattr(tri, f), getattr(ref, f), atol=2e-5, rtol=1e-5)


def _measured(train_hidden: bool, train_weight: bool):
    hidden, weight, b, labels = make_inputs(1, 21, 48, 64, dtype=torch.float32, ignore_frac=0.0)
    hidden.requires_grad_(train_hidden)
    weight.requires_grad_(train_weight)
    with LargestTensor() as mode:
        loss = losses.fused_linear(hidden, weight, labels, objective="sed", tau=0.5, impl="triton")
        loss.backward()
    return mode


def test_frozen_inputs_allocate_no_gradient():
    both, frozen_w, frozen_h = _measured(True, True), _measured(True, False), _measured(False, True)
    n_d, v_d = 20 * 48, 64 * 48
    assert both.largest >= v_d > frozen_w.largest  # no [V, d] tensor at all for a frozen head
    assert frozen_w.total <= both.total - v_d
    assert frozen_h.total <= both.total - n_d


def test_all_labels_ignored_and_second_backward():
    hidden, weight, b, labels = make_inputs(2, 6, 20, 37, dtype=torch.float32)
    labels[:] = -100
    loss, gh, gw, gb = grads(triton_path("sed", labels, tau=0.5), hidden, weight, b)
    assert loss.item() == 0.0 and all(torch.count_nonzero(g) == 0 for g in (gh, gw, gb))
    hidden, weight, b, labels = make_inputs(2, 9, 20, 37, dtype=torch.float32)
    w = weight.requires_grad_()
    loss = losses.fused_linear(hidden, w, labels, objective="ce", impl="triton")
    (g1,) = torch.autograd.grad(loss, w, retain_graph=True)  # the tiles are recomputed: a second pass works
    (g2,) = torch.autograd.grad(3 * loss, w)
    torch.testing.assert_close(g2, 3 * g1)


def test_impl_choice(monkeypatch):
    hidden, weight, b, labels = make_inputs(1, 5, 4, 9, dtype=torch.float64)
    with pytest.raises(ValueError, match="fp32, bf16 or fp16"):
        losses.fused_linear(hidden, weight, labels, objective="ce", impl="triton")
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        losses.fused_linear(hidden.float(), weight.float(), labels, objective="ce", impl="triton")
    assert losses.fused.resolve_impl("auto", torch.device("cpu"), torch.float32) == "torch"
