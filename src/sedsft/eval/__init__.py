"""The paper's math evaluation: 8 benchmarks, answer grading, Avg@k / pass@k, Self-BLEU diversity.

Light names (benchmarks, grading, metrics) import without torch; the generation backends and the
run driver (``evaluate``) load on first use, so grading workers stay small.
"""

from __future__ import annotations

import importlib

from sedsft.eval.benchmarks import BENCHMARKS, Problem, load
from sedsft.eval.grader_pool import Grade, GraderPool
from sedsft.eval.grading import answers_match, extract_answer, is_correct

_LAZY = {
    "SamplingConfig": "sedsft.eval.generation",
    "Sample": "sedsft.eval.generation",
    "HFBackend": "sedsft.eval.generation",
    "VLLMBackend": "sedsft.eval.generation",
    "PAPER_PROTOCOL": "sedsft.eval.protocol",
    "evaluate": "sedsft.eval.runner",
    "EvalResult": "sedsft.eval.runner",
    "BenchmarkMetrics": "sedsft.eval.metrics",
}

__all__ = [
    "BENCHMARKS",
    "Grade",
    "GraderPool",
    "Problem",
    "answers_match",
    "extract_answer",
    "is_correct",
    "load",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sedsft.eval' has no attribute {name!r}")
