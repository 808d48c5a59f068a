"""The logits path against naive formulas, the paper's hand-worked identities, stats and errors."""

import math

import pytest
import torch

from sedsft import losses
from sedsft.losses import naive

from .cases import EXACT_TOLERANCES, OBJECTIVE_CASES, case_id, random_batch


def naive_loss(name, logits, labels, **kw):
    return naive.NAIVE[name](logits, labels, **kw)


def value_and_grad(fn, logits):
    x = logits.detach().clone().requires_grad_()
    loss = fn(x)
    (g,) = torch.autograd.grad(loss, x)
    return loss.detach().double(), g.double()


@pytest.mark.parametrize("case", OBJECTIVE_CASES, ids=case_id)
@pytest.mark.parametrize("dtype,atol,rtol", EXACT_TOLERANCES, ids=["fp64", "fp32"])
@pytest.mark.parametrize("shape", [(3, 17, 123), (2, 5, 7), (1, 2, 3)], ids=str)
@pytest.mark.parametrize("num_items", [None, 41])
def test_matches_naive(case, dtype, atol, rtol, shape, num_items):
    name, opts = case
    logits, labels = random_batch(*shape, dtype=dtype, seed=sum(shape))
    labels[0, 1] = 0  # at least one kept label
    kw = dict(num_items_in_batch=num_items, **opts)
    got, g_got = value_and_grad(lambda x: losses.objective_loss(name, x, labels, **kw), logits)
    ref, g_ref = value_and_grad(lambda x: naive_loss(name, x, labels, **kw), logits)
    torch.testing.assert_close(got, ref, atol=atol, rtol=rtol)
    torch.testing.assert_close(g_got, g_ref, atol=atol, rtol=rtol)


@pytest.mark.parametrize("case", OBJECTIVE_CASES, ids=case_id)
def test_bf16_no_worse_than_naive_bf16(case):
    name, opts = case
    logits64, labels = random_batch(4, 33, 257, seed=7, dtype=torch.float64)
    logits16 = logits64.to(torch.bfloat16)
    exact, g_exact = value_and_grad(lambda x: naive_loss(name, x, labels, **opts), logits16.double())
    got, g_got = value_and_grad(lambda x: losses.objective_loss(name, x, labels, **opts), logits16)
    nai, g_nai = value_and_grad(lambda x: naive_loss(name, x, labels, **opts), logits16)
    assert abs(got - exact) <= abs(nai - exact) + 1e-6
    assert (g_got - g_exact).norm() <= (g_nai - g_exact).norm() + 1e-6


def test_public_functions_are_the_registry():
    logits, labels = random_batch(2, 9, 11)
    assert torch.equal(losses.cross_entropy(logits, labels), losses.objective_loss("ce", logits, labels))
    assert torch.equal(losses.dft(logits, labels), losses.objective_loss("dft", logits, labels))
    assert torch.equal(
        losses.gem(logits, labels, beta=0.6), losses.objective_loss("gem", logits, labels, beta=0.6)
    )
    assert torch.equal(
        losses.sed(logits, labels, tau=0.4), losses.objective_loss("sed", logits, labels, tau=0.4)
    )
    assert torch.equal(losses.sed_nomask(logits, labels), losses.sed(logits, labels, tau=math.inf))
    assert set(losses.OBJECTIVES) == {"ce", "dft", "gem", "sed", "sed_nomask"}
    assert set(naive.NAIVE) == set(losses.OBJECTIVES)  # every objective has its naive twin


# ---- hand-worked identities ------------------------------------------------------------------------


def test_tau_zero_makes_sed_equal_ce():
    logits, labels = random_batch(3, 11, 13)
    sed, g_sed = value_and_grad(lambda x: losses.sed(x, labels, tau=0.0), logits)
    ce, g_ce = value_and_grad(lambda x: losses.cross_entropy(x, labels), logits)
    assert torch.equal(sed, ce) and torch.equal(g_sed, g_ce)


def _logits_with_gold_prob(p: float, V: int = 5):
    """One position whose gold token (id 0) has probability p; the rest share 1 - p."""
    z = torch.full((1, 2, V), math.log((1 - p) / (V - 1)), dtype=torch.float64)
    z[0, 0, 0] = math.log(p)
    labels = torch.tensor([[-100, 0]])
    return z, labels


def test_half_probability_gives_zero_penalty():
    z, labels = _logits_with_gold_prob(0.5)
    out = losses.sed_nomask(z, labels, return_stats=True)
    assert out.stats.penalty.item() == pytest.approx(0.0, abs=1e-15)
    assert out.loss.item() == pytest.approx(math.log(2))


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.8, 0.99, 1 - 1e-6])
def test_sed_gradient_is_ce_gradient_times_w(p):
    """grad SED = w * grad CE with w = 1 - 2 lam M p (p - 1/2); with lam = 1, w -> 0 as p -> 1."""
    z, labels = _logits_with_gold_prob(p)
    _, g_sed = value_and_grad(lambda x: losses.sed_nomask(x, labels, lam=1.0), z)
    _, g_ce = value_and_grad(lambda x: losses.cross_entropy(x, labels), z)
    w = 1 - 2 * p * (p - 0.5)
    torch.testing.assert_close(g_sed, w * g_ce, atol=1e-12, rtol=1e-9)
    if p > 0.99:
        assert abs(w) < 5e-6  # w = 1 - 2p(p - 1/2) ~ 3 eps: the gradient vanishes at p = 1


@pytest.mark.parametrize("beta", [0.3, 0.7, 1.0, 2.0])
def test_gem_logit_gradient_is_tempered_softmax_minus_onehot(beta):
    logits, labels = random_batch(2, 6, 9, ignore_frac=0.0)
    _, g = value_and_grad(lambda x: losses.gem(x, labels, beta=beta, num_items_in_batch=1), logits)
    expected = torch.softmax(logits / beta, -1)
    expected[:, :-1].scatter_add_(
        -1, labels[:, 1:, None], -torch.ones_like(labels[:, 1:, None], dtype=torch.float64)
    )
    expected[:, -1] = 0  # the last position predicts nothing
    torch.testing.assert_close(g, expected, atol=1e-12, rtol=1e-9)


@pytest.mark.parametrize("case", OBJECTIVE_CASES, ids=case_id)
def test_all_ignored_gives_finite_zero_that_backpropagates(case):
    name, opts = case
    logits = torch.randn(2, 5, 7, requires_grad=True)
    labels = torch.full((2, 5), -100)
    loss = losses.objective_loss(name, logits, labels, **opts)
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and torch.count_nonzero(logits.grad) == 0


def test_stats_match_direct_computation():
    logits, labels = random_batch(3, 21, 17, seed=3)
    out = losses.sed(logits, labels, tau=0.45, top_k=2, lam=1.5, return_stats=True)
    z = logits[:, :-1][labels[:, 1:] != -100]
    y = labels[:, 1:][labels[:, 1:] != -100]
    probs = z.softmax(-1)
    p = probs.gather(1, y[:, None]).squeeze(1)
    topk = probs.topk(2, -1).values.sum(-1)
    mask = (topk < 0.45).double()
    m = out.stats.means()
    assert out.stats.tokens.item() == y.numel()
    assert m["mask_rate"] == pytest.approx(mask.mean().item())
    assert m["de_penalty"] == pytest.approx((1.5 * mask * (p - 0.5) ** 2).mean().item())
    assert m["gold_prob"] == pytest.approx(p.mean().item())
    assert m["entropy"] == pytest.approx(-(probs * probs.log()).sum(-1).mean().item())
    assert m["topk_mass"] == pytest.approx(topk.mean().item())
    assert m["top1_acc"] == pytest.approx((probs.argmax(-1) == y).double().mean().item())
    assert 0 < m["mask_rate"] < 1  # the case exercises both sides of the mask


def test_stats_sum_across_batches():
    logits, labels = random_batch(4, 9, 11)
    whole = losses.cross_entropy(logits, labels, return_stats=True).stats
    parts = [
        losses.cross_entropy(logits[i : i + 2], labels[i : i + 2], return_stats=True).stats for i in (0, 2)
    ]
    torch.testing.assert_close((parts[0] + parts[1]).as_tensor(), whole.as_tensor())


# ---- bad parameters fail at once, saying what to change ---------------------------------------------

BAD_PARAMETERS = [
    ("sed", {"tau": 0.5, "top_k": 0}, "top_k must be an integer >= 1"),
    ("sed", {"tau": 0.5, "lam": -1.0}, "lam must be a finite number >= 0"),
    ("sed", {"tau": float("nan")}, "tau is NaN"),
    ("gem", {"beta": 0.0}, "beta must be a finite number > 0"),
    ("gem", {"h": "cubic"}, "GEM h must be one of"),
    ("sed_nomask", {"tau": 0.5}, "has no option(s) ['tau']"),
    ("ce", {"lam": 1.0}, "has no option(s) ['lam']"),
    ("nll", {}, "unknown objective 'nll'"),
]


@pytest.mark.parametrize("name,opts,message", BAD_PARAMETERS)
def test_bad_parameters(name, opts, message):
    logits, labels = random_batch(1, 4, 5)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        losses.objective_loss(name, logits, labels, **opts)


def test_sed_needs_tau():
    logits, labels = random_batch(1, 4, 5)
    with pytest.raises(TypeError):
        losses.sed(logits, labels)


def test_label_outside_vocabulary():
    logits, labels = random_batch(1, 4, 5, ignore_frac=0.0)
    labels[0, 2] = 5
    with pytest.raises(ValueError, match=r"label 5 is outside the vocabulary \[0, 5\)"):
        losses.cross_entropy(logits, labels)
