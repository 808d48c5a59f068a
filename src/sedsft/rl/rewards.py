"""The verifiable math reward for GRPO: 1.0 when the completion's final answer equals the gold, else 0.0.

It is the evaluation's grader (``sedsft.eval.grading.is_correct``: same answer extraction, same
equivalence, same Math-Verify timeouts), in TRL's reward-function signature::

    math_reward(completions, answer=[...]) -> [1.0, 0.0, None, ...]

TRL passes every dataset column as a keyword list with one entry per completion. The gold is read
from the first column present among ``answer``, ``ground_truth``, ``solution`` and verl's
``reward_model`` (``{"ground_truth": ...}``); a ``solution`` that is a worked solution is reduced to
its boxed answer. A row with no gold gets ``None``, which TRL treats as "not scored" (no advantage).

Completions may be strings or conversational message lists (the text of the assistant turns is
graded). Model output is only parsed, never executed (see ``sedsft.eval.grading``).

Time bound: in the trainer's main thread Math-Verify's own 1 s SymPy timeout applies. For a hard
per-response limit (a SymPy call that never returns), :class:`PooledMathReward` grades in
``GraderPool`` worker processes with the evaluation's timeout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sedsft.eval.grading import extract_answer, is_correct

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


def normalize_gold(value: Any, *, column: str = "answer") -> str | None:
    """The gold answer string from a column value, or None when there is none.

    ``reward_model`` dicts give their ``ground_truth``; a ``solution`` column (a worked solution)
    gives its last boxed answer, or the whole text when it has no box (then it is the answer itself);
    an ``answer`` in GSM8K style ("... #### 72") gives what follows ``####``. Floats that are whole
    numbers print as integers (27.0 -> "27"), lists are joined with ", ".
    """
    if value is None:
        return None
    if isinstance(value, dict):
        return normalize_gold(value.get("ground_truth"), column="ground_truth")
    if isinstance(value, float):
        if value != value:  # NaN: a missing cell in a pandas-made file
            return None
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, int | bool):
        return str(value)
    if not isinstance(value, str):
        if hasattr(value, "tolist"):  # numpy arrays from Parquet
            value = value.tolist()
        if isinstance(value, list | tuple):
            items = [normalize_gold(v, column=column) for v in value]
            items = [v for v in items if v]
            return ", ".join(items) or None
        value = str(value)
    text = value.strip()
    if not text:
        return None
    if column == "solution" and ("\\boxed" in text or "\\fbox" in text):
        return extract_answer(text, numeric_fallback=False)
    if column in ("answer", "solution") and "####" in text:
        return text.rsplit("####", 1)[-1].strip().replace(",", "") or None
    return text


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


def math_reward(completions: list, **kwargs) -> list[float | None]:
    """1.0 / 0.0 per completion by ``sedsft.eval.grading.is_correct``; None where the gold is missing."""
    golds = gold_answers(len(completions), kwargs)
    return [
        None if gold is None else float(is_correct(completion_text(c), gold))
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
        for i, grade in zip(scored, grades, strict=True):
            out[i] = float(grade.correct)
        return out

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> PooledMathReward:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
