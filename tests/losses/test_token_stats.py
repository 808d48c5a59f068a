"""``token_stats`` (the one statistics routine) against a full-logits reference, and against ``fused_linear``."""

import pytest
import torch

from sedsft import losses

from .test_fused import make_inputs


def reference(hidden, weight, bias, targets, k):
    """Written from the definitions on the full [N, V] logits in fp64."""
    z = hidden.double() @ weight.double().T + (bias.double() if bias is not None else 0)  # [N, V]
    logp = torch.log_softmax(z, -1)
    top = logp.sort(-1, descending=True)
    gold = logp.gather(1, targets[:, None]).squeeze(1) if targets is not None else None
    return top.values[:, :k], top.indices[:, :k], -(logp.exp() * logp).sum(-1), gold


@pytest.mark.parametrize("chunk_size", [None, 7])
@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize("with_bias", [True, False])
def test_matches_reference(chunk_size, k, with_bias):
    hidden, weight, b, labels = make_inputs(1, 53, 20, 131, dtype=torch.float32, bias=with_bias, seed=3)
    rows, y = hidden[0], labels[0].clamp(min=0)
    got = losses.token_stats(rows, weight, y, bias=b, top_k=k, chunk_size=chunk_size)
    top_logp, top_ids, entropy, logp = reference(rows, weight, b, y, k)
    assert got.top_logp.dtype == torch.float32 and got.top_ids.dtype == torch.long
    torch.testing.assert_close(got.top_logp.double(), top_logp, atol=2e-5, rtol=1e-5)
    assert torch.equal(got.top_ids, top_ids)
    torch.testing.assert_close(got.entropy.double(), entropy, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(got.logp.double(), logp, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(got.topk_mass(k).double(), top_logp.exp().sum(-1), atol=2e-5, rtol=1e-5)


def test_logit_rows_without_weight_and_without_targets():
    hidden, weight, b, _ = make_inputs(1, 9, 6, 11, dtype=torch.float64)
    z = hidden[0] @ weight.T
    got = losses.token_stats(z, None, top_k=20)  # k beyond the vocabulary is clipped
    assert got.logp is None and got.max_k == 11
    ref = losses.token_stats(hidden[0], weight, top_k=20)
    torch.testing.assert_close(got.top_logp, ref.top_logp)
    torch.testing.assert_close(got.cumulative()[:, -1], torch.ones(9, dtype=torch.float32))
    with pytest.raises(ValueError, match="without targets"):
        _ = got.prob


def test_same_numbers_as_the_logged_statistics():
    """The trainer logs fused_linear's stats; calibration reads token_stats: the same engine, the same sums."""
    hidden, weight, b, labels = make_inputs(2, 31, 12, 77, dtype=torch.float64, seed=4)
    out = losses.fused_linear(
        hidden, weight, labels, objective="sed", bias=b, tau=0.4, top_k=3, chunk_size=9, return_stats=True
    )
    kept = labels[:, 1:] != -100
    s = losses.token_stats(hidden[:, :-1][kept], weight, labels[:, 1:][kept], bias=b, top_k=3, chunk_size=5)
    m = s.topk_mass(3)
    expected = torch.stack([m.sum(), s.prob.sum(), s.entropy.sum(), (m < 0.4).sum()]).double()
    got = out.stats
    torch.testing.assert_close(
        torch.stack([got.topk_mass, got.prob, got.entropy, got.masked]), expected, atol=1e-5, rtol=1e-6
    )


def test_bad_arguments():
    hidden, weight, _, labels = make_inputs(1, 5, 4, 9, dtype=torch.float32)
    with pytest.raises(ValueError, match="top_k must be"):
        losses.token_stats(hidden[0], weight, top_k=0)
    with pytest.raises(ValueError, match=r"hidden must be \[N, d\]"):
        losses.token_stats(hidden, weight)
    with pytest.raises(ValueError, match="weight must be"):
        losses.token_stats(hidden[0], weight[:, :3])
    with pytest.raises(ValueError, match="impl must be one of"):
        losses.token_stats(hidden[0], weight, impl="cuda")


@pytest.mark.parametrize("rows,block", [(13, 5), (64, 64), (200, 64), (3, 8)])
def test_blocked_entropy_equals_the_full_softmax(rows, block):
    """softmax_in_place's entropy over blocks of scratch rows (a remainder block included) is exact."""
    from sedsft.losses.chunk import entropy_scratch, softmax_in_place

    z = torch.randn(rows, 37, dtype=torch.float64) * 4
    want_p, want_h = z.softmax(-1), torch.distributions.Categorical(logits=z).entropy()
    probs, soft = softmax_in_place(z.clone(), z.amax(-1), scratch=torch.empty(block, 37, dtype=torch.float64))
    torch.testing.assert_close(probs, want_p)
    torch.testing.assert_close(soft.entropy, want_h)
    torch.testing.assert_close(soft.lse, z.logsumexp(-1))
    assert entropy_scratch(torch.empty(rows, 37)).shape == (min(rows, max(64, -(-rows // 8))), 37)


@pytest.mark.parametrize("impl", ["chunked", "recompute", "triton"])
def test_every_engine_gives_the_same_statistics(impl, monkeypatch):
    """The GPU engines (in Triton's interpreter) against the torch path; targets given or not."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    hidden, weight, b, labels = make_inputs(1, 21, 12, 70, dtype=torch.float32, seed=6)
    rows, y = hidden[0], labels[0].clamp(min=0)
    for targets in (y, None):
        ref = losses.token_stats(rows, weight, targets, bias=b, top_k=3, impl="torch")
        got = losses.token_stats(rows, weight, targets, bias=b, top_k=3, impl=impl)
        assert torch.equal(got.top_ids, ref.top_ids) and (got.logp is None) == (targets is None)
        for f in ("top_logp", "entropy") + (("logp",) if targets is not None else ()):
            torch.testing.assert_close(getattr(got, f), getattr(ref, f), atol=2e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="needs the head weight"):
        losses.token_stats(rows @ weight.T, None, impl=impl)
