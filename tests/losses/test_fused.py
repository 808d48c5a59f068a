"""The fused LM-head engine against the logits path: values and gradients for hidden, weight, bias."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sedsft import losses

from .cases import EXACT_TOLERANCES, OBJECTIVE_CASES, case_id


def make_inputs(B, T, d, V, *, dtype, seed=0, bias=True, ignore_frac=0.3):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, d, generator=g, dtype=torch.float64).to(dtype)
    weight = (torch.randn(V, d, generator=g, dtype=torch.float64) / d**0.5 * 3).to(dtype)
    b = (torch.randn(V, generator=g, dtype=torch.float64) * 0.5).to(dtype) if bias else None
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[torch.rand(B, T, generator=g) < ignore_frac] = -100
    return hidden, weight, b, labels


def grads(fn, hidden, weight, bias):
    leaves = [
        t.detach().clone().requires_grad_() for t in (hidden, weight) + ((bias,) if bias is not None else ())
    ]
    loss = fn(*leaves, *([None] if bias is None else []))
    return [loss.detach()] + list(torch.autograd.grad(loss, leaves))


def logits_path(name, labels, **kw):
    def fn(h, w, b):
        z = h @ w.T + (b if b is not None else 0)
        return losses.objective_loss(name, z, labels, **kw)

    return fn


def fused_path(name, labels, **kw):
    return lambda h, w, b: losses.fused_linear(h, w, labels, objective=name, bias=b, **kw)


@pytest.mark.parametrize("case", OBJECTIVE_CASES, ids=case_id)
@pytest.mark.parametrize("dtype,atol,rtol", EXACT_TOLERANCES, ids=["fp64", "fp32"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("chunk_size", [None, 16, 1])
def test_parity_with_logits_path(case, dtype, atol, rtol, bias, chunk_size):
    name, opts = case
    hidden, weight, b, labels = make_inputs(3, 47, 31, 123, dtype=dtype, bias=bias)
    kw = dict(num_items_in_batch=None, **opts)
    ref = grads(logits_path(name, labels, **kw), hidden, weight, b)
    got = grads(fused_path(name, labels, chunk_size=chunk_size, **kw), hidden, weight, b)
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r, atol=atol, rtol=rtol)


@pytest.mark.parametrize("case", OBJECTIVE_CASES, ids=case_id)
def test_num_items_in_batch(case):
    name, opts = case
    hidden, weight, b, labels = make_inputs(2, 13, 8, 29, dtype=torch.float64)
    ref = grads(logits_path(name, labels, num_items_in_batch=97, **opts), hidden, weight, b)
    got = grads(
        fused_path(name, labels, num_items_in_batch=torch.tensor(97), chunk_size=5, **opts), hidden, weight, b
    )
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("case", OBJECTIVE_CASES, ids=case_id)
def test_bf16_no_worse_than_naive_bf16(case):
    """In bf16, the fused path's error (vs. fp64 on the same inputs) is within the naive bf16 path's."""
    name, opts = case
    hidden, weight, b, labels = make_inputs(2, 40, 24, 301, dtype=torch.bfloat16, seed=5)
    exact = grads(logits_path(name, labels, **opts), hidden.double(), weight.double(), b.double())

    def naive_bf16(h, w, bb):  # the logits in bf16 through the bf16 reference formulas
        from sedsft.losses import naive

        return naive.NAIVE[name](h @ w.T + bb, labels, **opts)

    nai = grads(naive_bf16, hidden, weight, b)
    got = grads(fused_path(name, labels, chunk_size=7, **opts), hidden, weight, b)  # >2 token and vocab tiles
    assert got[0].dtype == torch.float32  # the loss is reported in fp32
    for e, n, g in zip(exact, nai, got):
        assert g.dtype == n.dtype or g.ndim == 0  # gradients come back in the input dtype
        assert (g.double() - e).norm() <= (n.double() - e).norm() * 1.05 + 1e-4


@pytest.mark.parametrize("case", OBJECTIVE_CASES, ids=case_id)
def test_all_labels_ignored(case):
    name, opts = case
    hidden, weight, b, labels = make_inputs(2, 6, 4, 9, dtype=torch.float32)
    labels[:] = -100
    loss, gh, gw, gb = grads(fused_path(name, labels, **opts), hidden, weight, b)
    assert loss.item() == 0.0
    assert all(torch.count_nonzero(g) == 0 for g in (gh, gw, gb))


def test_stats_match_logits_path():
    hidden, weight, b, labels = make_inputs(3, 30, 16, 57, dtype=torch.float64, seed=2)
    z = hidden @ weight.T + b
    ref = losses.sed(z, labels, tau=0.35, return_stats=True).stats
    got = losses.fused_linear(
        hidden, weight, labels, objective="sed", bias=b, tau=0.35, chunk_size=8, return_stats=True
    )
    torch.testing.assert_close(got.stats.as_tensor(), ref.as_tensor(), atol=1e-9, rtol=1e-9)


class LargestTensor(TorchDispatchMode):
    """Records the number of elements of every tensor an op creates (views and in-place results excluded)."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket is torch.ops.aten.set_:  # re-views an existing storage (Triton's interpreter)
            return out
        seen = {a.untyped_storage().data_ptr() for a in _tensors(args, kwargs)}
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
                self.sizes.append(t.numel())
        return out

    @property
    def largest(self) -> int:
        return max(self.sizes, default=0)

    @property
    def total(self) -> int:
        return sum(self.sizes)


def _tensors(args, kwargs):
    flat = list(args) + list((kwargs or {}).values())
    for a in flat:
        if isinstance(a, torch.Tensor):
            yield a
        elif isinstance(a, (list, tuple)):
            yield from (x for x in a if isinstance(x, torch.Tensor))


@pytest.mark.parametrize("case", OBJECTIVE_CASES, ids=case_id)
def test_never_allocates_full_logits(case):
    name, opts = case
    B, T, d, V, chunk = 4, 64, 16, 1000, 32
    hidden, weight, b, labels = make_inputs(B, T, d, V, dtype=torch.float32, ignore_frac=0.0)
    hidden.requires_grad_()
    weight.requires_grad_()
    with LargestTensor() as mode:
        out = losses.fused_linear(
            hidden, weight, labels, objective=name, bias=b, chunk_size=chunk, return_stats=True, **opts
        )
        out.loss.backward()
    n_kept = B * (T - 1)
    assert mode.largest <= chunk * V  # never [N, V] = 252 x 1000
    assert mode.largest < n_kept * V


def test_auto_chunk_size_fits_budget(monkeypatch):
    monkeypatch.setenv("SEDSFT_FUSED_BUDGET_MB", "64")
    rows = losses.auto_chunk_size(100_000, 151_936, device=torch.device("cpu"))
    assert 2 * rows * 151_936 * 4 <= 64 * 2**20 < 2 * (rows + 1) * 151_936 * 4
    assert losses.auto_chunk_size(3, 10, device=torch.device("cpu")) == 3


def test_bad_shapes_and_chunk():
    hidden, weight, b, labels = make_inputs(2, 5, 4, 9, dtype=torch.float32)
    with pytest.raises(ValueError, match="weight must be"):
        losses.fused_linear(hidden, weight[:, :3], labels, objective="ce")
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        losses.fused_linear(hidden, weight, labels, objective="ce", chunk_size=0)
    with pytest.raises(ValueError, match="unknown objective"):
        losses.fused_linear(hidden, weight, labels, objective="nll")


def test_second_backward_is_refused():
    hidden, weight, b, labels = make_inputs(2, 6, 4, 9, dtype=torch.float32)
    weight.requires_grad_()
    loss = losses.fused_linear(hidden, weight, labels, objective="ce")
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward through the same loss twice"):
        loss.backward()


def test_scaled_loss_scales_gradients():
    """A trainer multiplies the loss (processes, loss scaling): the in-place scaling must follow."""
    hidden, weight, b, labels = make_inputs(2, 9, 5, 13, dtype=torch.float64)
    once = grads(fused_path("sed", labels, tau=0.4), hidden, weight, b)
    thrice = grads(
        lambda h, w, bb: 3.0 * losses.fused_linear(h, w, labels, objective="sed", bias=bb, tau=0.4),
        hidden,
        weight,
        b,
    )
    for a, c in zip(once, thrice):
        torch.testing.assert_close(3.0 * a, c)


def _allocated(name, opts, *, train_hidden, train_weight, **kw):
    """Elements of every tensor created by one forward + backward, and the shapes involved."""
    B, T, d, V = 2, 40, 48, 300
    hidden, weight, b, labels = make_inputs(B, T, d, V, dtype=torch.float32, ignore_frac=0.0)
    hidden.requires_grad_(train_hidden)
    weight.requires_grad_(train_weight)
    with LargestTensor() as mode:
        loss = losses.fused_linear(hidden, weight, labels, objective=name, chunk_size=16, **opts, **kw)
        loss.backward()
    assert (hidden.grad is not None) == train_hidden and (weight.grad is not None) == train_weight
    return mode, B * (T - 1) * d, V * d


@pytest.mark.parametrize("case", [OBJECTIVE_CASES[0], OBJECTIVE_CASES[3], OBJECTIVE_CASES[4]], ids=case_id)
def test_frozen_inputs_allocate_no_gradient(case):
    """A frozen head (LoRA) creates no [V, d] tensor; a frozen hidden state no [N, d] gradient: measured."""
    name, opts = case
    both, n_d, v_d = _allocated(name, opts, train_hidden=True, train_weight=True)
    frozen_w, _, _ = _allocated(name, opts, train_hidden=True, train_weight=False)
    frozen_h, _, _ = _allocated(name, opts, train_hidden=False, train_weight=True)
    assert both.largest >= v_d  # the weight gradient is there when it is needed ...
    assert frozen_w.largest < v_d  # ... and nothing of its size otherwise
    assert frozen_w.total <= both.total - v_d
    assert frozen_h.total <= both.total - n_d


def test_scored_rows_by_index():
    """The index form of the shift-and-keep rule: position t of row b is scored when labels[b, t + 1] is kept."""
    from sedsft.losses.logits import scored_rows

    labels = torch.tensor([[5, -100, 2, 7], [-100, 1, -100, -100], [3, 3, 0, -100]])
    idx, y = scored_rows(labels, vocab_size=8, ignore_index=-100)
    # kept (b, t): (0, 1) -> 2, (0, 2) -> 7, (1, 0) -> 1, (2, 0) -> 3, (2, 1) -> 0; flat index b * 4 + t
    assert idx.tolist() == [1, 2, 4, 8, 9] and y.tolist() == [2, 7, 1, 3, 0]
    labels[2, 2] = 8
    with pytest.raises(ValueError, match=r"label 8 is outside the vocabulary \[0, 8\)"):
        losses.fused_linear(torch.zeros(3, 4, 2), torch.zeros(8, 2), labels, objective="ce")
    idx, y = scored_rows(torch.full((2, 3), -100), vocab_size=8, ignore_index=-100)
    assert idx.numel() == 0 and y.numel() == 0
