"""Accuracy and diversity of sampled responses, per benchmark: Avg@k, pass@k, Self-BLEU, distinct-n.

Definitions (docs/evaluation.md):
- Avg@k: per problem, the fraction of its k samples judged correct; averaged over problems.
- pass@k (k <= n): the unbiased estimator 1 - C(n-c, k) / C(n, k) of Chen et al. (2021), averaged.
- Self-BLEU: per problem with n >= 2 samples, each sample's sentence BLEU-4 (sacrebleu defaults:
  13a tokenisation, exp smoothing) against the other n-1 samples as references; averaged over
  samples, then over problems. BLEU points, 0-100; lower means more diverse.
- distinct-n: per problem, unique n-grams / all n-grams over its samples (whitespace tokens); averaged.
Accuracies are fractions in [0, 1]; tables show percentages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import fmean


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k draws without replacement from n samples (c correct) is correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # 1 - prod_{i=n-c+1}^{n} (1 - k/i): the ratio of binomials without huge integers
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def avg_at_k(correct: Sequence[Sequence[bool]]) -> float:
    """Mean over problems of the fraction of correct samples."""
    return fmean(sum(c) / len(c) for c in correct) if correct else 0.0


def self_bleu(samples: Sequence[str]) -> float | None:
    """Self-BLEU of one problem's samples (0-100), or None with fewer than two samples."""
    if len(samples) < 2:
        return None
    from sacrebleu.metrics import BLEU

    bleu = BLEU(effective_order=True)  # sentence-level: don't zero out short samples' missing n-gram orders
    scores = [
        bleu.sentence_score(s, [o for j, o in enumerate(samples) if j != i]).score
        for i, s in enumerate(samples)
    ]
    return fmean(scores)


def distinct_n(samples: Sequence[str], n: int) -> float | None:
    """Unique n-grams / total n-grams over the samples; None when they have no n-gram."""
    grams = [
        tuple(toks[i : i + n]) for s in samples for toks in [s.split()] for i in range(len(toks) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else None


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return fmean(values) if values else None


@dataclass(frozen=True)
class BenchmarkMetrics:
    """One benchmark's numbers (one column of Table 1 and of Table 2)."""

    benchmark: str
    num_problems: int
    num_samples: int  # samples per problem (the smallest, if problems differ)
    accuracy: float  # Avg@num_samples, fraction
    pass_at: dict[int, float]  # k -> unbiased pass@k, fraction
    self_bleu: float | None  # BLEU points; None when num_samples < 2
    distinct_1: float | None
    distinct_2: float | None
    mean_entropy: float | None  # mean token entropy (nats), when the backend reports it
    mean_tokens: float | None
    truncated: float  # fraction of samples stopped by max_new_tokens

    def to_dict(self) -> dict:
        d = asdict(self)
        d["pass_at"] = {str(k): v for k, v in self.pass_at.items()}
        return d


def benchmark_metrics(benchmark: str, records: Sequence[dict]) -> BenchmarkMetrics:
    """Metrics from per-sample records (fields ``problem_id``, ``sample_index``, ``correct``, ``response``)."""
    by_problem: dict[str, list[dict]] = {}
    for r in records:
        by_problem.setdefault(str(r["problem_id"]), []).append(r)
    groups = [sorted(g, key=lambda r: int(r.get("sample_index", 0))) for g in by_problem.values()]
    if not groups:
        raise ValueError(f"benchmark {benchmark!r} has no graded samples")
    correct = [[bool(r["correct"]) for r in g] for g in groups]
    texts = [[str(r.get("response", "")) for r in g] for g in groups]
    n_min = min(len(c) for c in correct)
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64, n_min) if k <= n_min})
    flat = [r for g in groups for r in g]
    return BenchmarkMetrics(
        benchmark=benchmark,
        num_problems=len(groups),
        num_samples=n_min,
        accuracy=avg_at_k(correct),
        pass_at={k: fmean(pass_at_k(len(c), sum(c), k) for c in correct) for k in ks},
        self_bleu=_mean(self_bleu(t) for t in texts),
        distinct_1=_mean(distinct_n(t, 1) for t in texts),
        distinct_2=_mean(distinct_n(t, 2) for t in texts),
        mean_entropy=_mean(r.get("mean_entropy") for r in flat),
        mean_tokens=_mean(r.get("num_tokens") for r in flat),
        truncated=fmean(bool(r.get("truncated", False)) for r in flat),
    )
