"""Reward module for the verl framework: the evaluation's grader as verl's ``compute_score``.

verl loads it with ``custom_reward_function.path=<this file> custom_reward_function.name=compute_score``
and calls ``compute_score(data_source, solution_str, ground_truth, extra_info)`` once per response.
``sedsft export-verl`` copies this file next to the exported parquet files; it works from any folder
as long as ``sedsft`` is installed in the environment verl runs in.

The score is 1.0 when the response's final answer equals ``ground_truth`` by
``sedsft.eval.grading.is_correct`` (the same extraction, equivalence and Math-Verify timeouts as the
evaluation and as ``sedsft grpo``'s ``math_reward``), else 0.0; an empty gold scores 0.0 (verl needs a
number). Model output is parsed, never executed.
"""

from __future__ import annotations

from sedsft.eval.grading import is_correct
from sedsft.rl.rewards import normalize_gold


def compute_score(data_source, solution_str, ground_truth, extra_info=None) -> float:
    """1.0 if ``solution_str`` ends with an answer equal to ``ground_truth``, else 0.0 (``data_source`` unused)."""
    gold = normalize_gold(ground_truth, column="answer")
    if gold is None or not isinstance(solution_str, str):
        return 0.0
    return 1.0 if is_correct(solution_str, gold) else 0.0
