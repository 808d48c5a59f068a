"""Avg@k, the unbiased pass@k estimator, Self-BLEU and distinct-n on hand-worked cases."""

from __future__ import annotations

import math

import pytest

from sedsft.eval.metrics import avg_at_k, benchmark_metrics, distinct_n, pass_at_k, self_bleu


@pytest.mark.parametrize(
    "n,c,k", [(8, 0, 1), (8, 2, 1), (8, 2, 4), (8, 8, 8), (10, 3, 4), (16, 1, 16), (64, 5, 8)]
)
def test_pass_at_k_equals_the_binomial_formula(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))


@pytest.mark.parametrize("n,c,k,expected", [(8, 2, 1, 0.25), (8, 0, 8, 0.0), (8, 1, 8, 1.0), (4, 3, 2, 1.0)])
def test_pass_at_k_identities(n, c, k, expected):
    # pass@1 is the fraction correct; one correct among all n drawn is certain
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_rejects_k_above_n():
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 1, 8)


def test_avg_at_k_averages_per_problem_fractions():
    assert avg_at_k([[True, False, False, False], [True, True, True, True]]) == pytest.approx(0.625)


@pytest.mark.parametrize(
    "samples,expected",
    [
        (["the cat sat on the mat today"] * 4, 100.0),  # identical samples: no diversity
        (["alpha beta gamma delta", "one two three four", "red green blue yellow"], 0.0),  # disjoint
        (["only one sample"], None),  # undefined
    ],
)
def test_self_bleu_extremes(samples, expected):
    got = self_bleu(samples)
    assert got == (None if expected is None else pytest.approx(expected, abs=1e-6))


def test_self_bleu_drops_as_samples_diverge():
    close = ["we add 3 and 4 to get 7 so the answer is 7"] * 2 + [
        "we add 4 and 3 to get 7 so the answer is 7"
    ]
    far = close[:1] + ["seven is the sum because three plus four", "count up from three four times: 7"]
    assert self_bleu(far) < self_bleu(close)


@pytest.mark.parametrize(
    "samples,n,expected", [(["a b a b", "a b"], 2, 0.5), (["a b c"], 1, 1.0), (["a"], 2, None)]
)
def test_distinct_n(samples, n, expected):
    assert distinct_n(samples, n) == expected


def test_benchmark_metrics_from_records():
    recs = [
        {"problem_id": p, "sample_index": i, "correct": ok, "response": f"r{p}{i}", "num_tokens": 10}
        for p, oks in (("p1", [True, False, False, False]), ("p2", [True, True, True, True]))
        for i, ok in enumerate(oks)
    ]
    m = benchmark_metrics("x", recs)
    assert (m.num_problems, m.num_samples, m.accuracy) == (2, 4, pytest.approx(0.625))
    assert m.pass_at[4] == pytest.approx(1.0) and set(m.pass_at) == {1, 2, 4}
    assert m.mean_entropy is None and m.mean_tokens == 10
