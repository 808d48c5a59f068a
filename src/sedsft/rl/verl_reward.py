"""Reward module for the verl framework: the evaluation's grader as verl's ``compute_score``.

verl loads it with ``custom_reward_function.path=<this file> custom_reward_function.name=compute_score``
and calls ``compute_score(data_source, solution_str, ground_truth, extra_info, **more)`` once per
response; the extra keywords verl passes (and any ``custom_reward_function.reward_kwargs``) are
accepted. ``sedsft export-verl`` copies this file next to the exported parquet files; it works from
any folder as long as ``sedsft`` is installed in the environment verl runs in.

The score is 1.0 when the response's final answer equals ``ground_truth`` by
``sedsft.eval.grading.grade`` (the evaluation's and ``sedsft grpo``'s grader), else 0.0; an empty
gold, a grading error or a time-out scores 0.0 (verl needs a number; the last two are logged).
Model output is parsed, never executed.

``REWARD`` picks the score: ``"math"`` (above) or ``"authors_boxed"``, the authors' strict +1 / -1 match
of the last ``\\boxed{}`` (:func:`sedsft.rl.rewards.authors_boxed_score`; an empty gold scores -1.0).
``sedsft export-verl --reward`` writes its choice into the copy; ``reward_kwargs`` may override it.

Time limit (``timeout_s``, seconds): in a main thread the grader's alarm enforces it. verl's
reward managers may call from worker threads, where no alarm works; there each response is graded
in a process-wide pool of ``grading_workers`` processes, each killed when it runs past
``timeout_s``, so one slow SymPy comparison cannot stall a reward thread.
"""

from __future__ import annotations

import threading

from sedsft.eval.grader_pool import check_grading_settings, shared_pool
from sedsft.eval.grading import grade
from sedsft.rl.rewards import REWARDS, authors_boxed_score, normalize_gold, reward_of

REWARD = "math"  # sedsft export-verl --reward rewrites this line in its copy
TIMEOUT_S = 2.0
GRADING_WORKERS = 4


def compute_score(
    data_source,
    solution_str,
    ground_truth,
    extra_info=None,
    *,
    timeout_s: float = TIMEOUT_S,
    grading_workers: int = GRADING_WORKERS,
    reward: str = REWARD,
    **kwargs,
) -> float:
    """1.0 if ``solution_str`` ends with an answer equal to ``ground_truth``, else 0.0 (``reward="math"``),
    or the authors' +1.0 / -1.0 (``reward="authors_boxed"``); ``data_source``, ``extra_info`` and other
    keywords verl passes are unused."""
    if reward not in REWARDS:
        raise ValueError(f"reward must be one of {sorted(REWARDS)}, got {reward!r}")
    check_grading_settings(workers=grading_workers, timeout_s=timeout_s)
    gold = normalize_gold(ground_truth, column="answer")
    if reward == "authors_boxed":
        return (
            -1.0
            if gold is None or not isinstance(solution_str, str)
            else authors_boxed_score(solution_str, gold)
        )
    if gold is None or not isinstance(solution_str, str):
        return 0.0
    if threading.current_thread() is threading.main_thread():
        return reward_of(grade(solution_str, gold, timeout_s=timeout_s))
    pool = shared_pool(workers=grading_workers, timeout_s=timeout_s)
    return reward_of(pool.grade([(solution_str, gold)])[0])
