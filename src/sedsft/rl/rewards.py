"""The verifiable math reward for GRPO: 1.0 when the completion's final answer equals the gold, else 0.0.

It is the evaluation's grader (``sedsft.eval.grading.grade``: same answer extraction, same
equivalence, same time limit), in TRL's reward-function signature::

    math_reward(completions, answer=[...]) -> [1.0, 0.0, None, ...]

TRL passes every dataset column as a keyword list with one entry per completion. The gold is read
from the first column present among ``answer``, ``ground_truth``, ``solution`` and verl's
``reward_model`` (``{"ground_truth": ...}``) by ``sedsft.eval.benchmarks.normalize_gold`` (a
``solution`` that is a worked solution is reduced to its boxed answer). A row with no gold gets
``None``, which TRL treats as "not scored" (no advantage). A grading error or time-out never stops
training: that completion gets 0.0 and a warning is logged.

Completions may be strings or conversational message lists (the text of the assistant turns is
graded). Model output is only parsed, never executed (see ``sedsft.eval.grading``).

Time bound: in the trainer's main thread each grade runs under the grader's alarm (3 s). For a hard
per-response limit (a SymPy call stuck in C), :class:`PooledMathReward` grades in ``GraderPool``
worker processes.

``authors_boxed`` (``--reward authors_boxed``) is the strict reward of the authors' released verl recipe,
for comparisons with the paper's RL setup: +1 when the content of the last ``\\boxed{...}`` in the
response's last 100 characters is exactly the gold string, else -1 (:func:`authors_boxed_score`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sedsft.eval.benchmarks import normalize_gold
from sedsft.eval.grading import Grade, grade

__all__ = [
    "GOLD_COLUMNS",
    "REWARDS",
    "authors_boxed_reward",
    "authors_boxed_score",
    "PooledMathReward",
    "completion_text",
    "gold_answers",
    "math_reward",
    "normalize_gold",
    "reward_of",
]
logger = logging.getLogger(__name__)

# Dataset columns that can carry the gold, in the order they are tried.
GOLD_COLUMNS: tuple[str, ...] = ("answer", "ground_truth", "solution", "reward_model")


def completion_text(completion: Any) -> str:
    """The text to grade: a string as is; for chat messages, the assistant turns' content joined."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    parts = []
    for message in completion or []:
        if not isinstance(message, dict):
            raise TypeError(
                f"a conversational completion must be a list of message dicts, got {type(message).__name__}"
            )
        if message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, list):  # content blocks: keep the text ones
            content = "".join(b.get("text", "") for b in content if isinstance(b, dict))
        parts.append(content or "")
    return "\n".join(parts)


def gold_answers(num: int, kwargs: dict[str, Any]) -> list[str | None]:
    """One gold (or None) per completion, from the first gold column present in TRL's ``kwargs``."""
    for column in GOLD_COLUMNS:
        values = kwargs.get(column)
        if values is None:
            continue
        if isinstance(values, str | dict) or not isinstance(values, Sequence):
            raise TypeError(f"reward column {column!r} must be a list with one value per completion")
        if len(values) != num:
            raise ValueError(f"reward column {column!r} has {len(values)} values for {num} completions")
        return [normalize_gold(v, column=column) for v in values]
    return [None] * num


def reward_of(g: Grade) -> float:
    """1.0 for a correct grade, else 0.0; a grading error or time-out is logged (the run goes on)."""
    if g.error:
        logger.warning("math_reward: graded 0.0 because %s (extracted answer %.80r)", g.error, g.extracted)
    return 1.0 if g.correct else 0.0


def math_reward(completions: list, **kwargs) -> list[float | None]:
    """1.0 / 0.0 per completion by :func:`sedsft.eval.grading.grade`; None where the gold is missing."""
    golds = gold_answers(len(completions), kwargs)
    return [
        None if gold is None else reward_of(grade(completion_text(c), gold))
        for c, gold in zip(completions, golds, strict=True)
    ]


class PooledMathReward:
    """:func:`math_reward` graded in ``GraderPool`` processes: a hard ``timeout_s`` per response.

    Start it before training and ``close()`` it after (or use it as a context manager). Its
    ``__name__`` is ``math_reward`` so TRL logs it under the same name as the in-process reward.
    """

    def __init__(self, *, workers: int = 4, timeout_s: float = 2.0):
        from sedsft.eval.grader_pool import GraderPool

        self.__name__ = "math_reward"  # what TRL logs the reward under (rewards/math_reward/mean)
        self.pool = GraderPool(workers=workers, timeout_s=timeout_s)

    def __call__(self, completions: list, **kwargs) -> list[float | None]:
        golds = gold_answers(len(completions), kwargs)
        scored = [i for i, g in enumerate(golds) if g is not None]
        grades = self.pool.grade([(completion_text(completions[i]), golds[i]) for i in scored])
        out: list[float | None] = [None] * len(completions)
        for i, g in zip(scored, grades, strict=True):
            out[i] = reward_of(g)
        return out

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> PooledMathReward:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---- the authors' strict reward --------------------------------------------------------------------

AUTHORS_WINDOW = 100  # characters at the end of the response that are searched for the box


def authors_boxed_score(response: str, gold: str) -> float:
    """+1.0 / -1.0 as the authors' verl recipe scores (verl's ``math_dapo`` reward with strict box checking).

    The rule, restated: when the response has both ``<think>`` and ``</think>``, only the text after the first
    ``</think>`` (up to a second one, if any) counts; of that, the last 100 characters. In them, the last
    ``\\boxed{`` is found and its braces matched; its content, not normalised in any way, must equal
    ``gold`` exactly. No box, or braces that never close, is -1.0.
    """
    if "<think>" in response and "</think>" in response:
        response = response.split("</think>")[1]
    boxed = _last_boxed_content(response[-AUTHORS_WINDOW:])
    return 1.0 if boxed is not None and boxed == gold else -1.0


def _last_boxed_content(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + len("\\boxed{") : i]
    return None  # the box never closes


def authors_boxed_reward(completions: list, **kwargs) -> list[float | None]:
    """+1.0 / -1.0 per completion by :func:`authors_boxed_score`; None where the gold is missing."""
    golds = gold_answers(len(completions), kwargs)
    return [
        None if gold is None else authors_boxed_score(completion_text(c), gold)
        for c, gold in zip(completions, golds, strict=True)
    ]


# --reward: name -> TRL reward function (sedsft grpo) and verl scoring (sedsft export-verl)
REWARDS = {"math": math_reward, "authors_boxed": authors_boxed_reward}
