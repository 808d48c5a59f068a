"""The paper's math evaluation: 8 benchmarks, answer grading, Avg@k / pass@k, Self-BLEU diversity.

Light names (benchmarks, grading, metrics) import without torch; the generation backends and the
run driver (``evaluate``) load on first use, so grading workers stay small.
"""

from __future__ import annotations

import importlib

from sedsft.eval.benchmarks import BENCHMARKS, DATA_DEFECTS, Problem, load, normalize_gold
from sedsft.eval.grader_pool import GraderPool, InProcessGrader, open_grader
from sedsft.eval.grading import Grade, answers_match, extract_answer, grade, is_correct

_LAZY = {
    "SamplingConfig": "sedsft.eval.generation",
    "Sample": "sedsft.eval.generation",
    "HFBackend": "sedsft.eval.generation",
    "VLLMBackend": "sedsft.eval.generation",
    "PAPER_PROTOCOL": "sedsft.eval.protocol",
    "evaluate": "sedsft.eval.runner",
    "grade_responses": "sedsft.eval.responses",
    "read_responses": "sedsft.eval.responses",
    "EvalResult": "sedsft.eval.runner",
    "BenchmarkMetrics": "sedsft.eval.metrics",
}

__all__ = [
    "BENCHMARKS",
    "DATA_DEFECTS",
    "Grade",
    "GraderPool",
    "InProcessGrader",
    "Problem",
    "answers_match",
    "extract_answer",
    "grade",
    "is_correct",
    "load",
    "normalize_gold",
    "open_grader",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sedsft.eval' has no attribute {name!r}")
