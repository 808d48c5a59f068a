"""RL prompts: one chat prompt and one gold answer per record, from the layouts SFT data comes in.

| layout                      | prompt                                    | gold answer                                |
| --------------------------- | ----------------------------------------- | ------------------------------------------ |
| verl (the paper's RL set)   | ``prompt`` (list of chat messages)        | ``reward_model.ground_truth``              |
| question / problem          | ``question`` or ``problem`` (user turn)   | ``answer``, ``ground_truth``, ``final_answer``, or the boxed answer of ``solution`` / ``response`` |
| prompt / completion         | ``prompt`` (text or messages)             | as above, or the boxed answer of ``completion`` |
| messages                    | the turns before the last assistant turn  | as above, or the boxed answer of that assistant turn |

A prompt without a system turn gets ``system_prompt`` (the paper's, by default); a prompt that has
one keeps it. Records are read with ``sedsft.data.load_records`` (JSONL, JSON, Parquet or a folder).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sedsft.errors import UserError
from sedsft.prompts import DEFAULT_SYSTEM_PROMPT
from sedsft.rl.rewards import normalize_gold

logger = logging.getLogger(__name__)

MISSING_GOLD = ("keep", "drop", "error")

# (column, how to read it): "answer" columns hold the answer, "solution" columns a worked solution.
_GOLD_SOURCES: tuple[tuple[str, str], ...] = (
    ("reward_model", "answer"),
    ("answer", "answer"),
    ("ground_truth", "answer"),
    ("final_answer", "answer"),
    ("solution", "solution"),
    ("response", "solution"),
    ("completion", "solution"),
)


@dataclass(frozen=True)
class RLPrompt:
    """One RL prompt: the chat messages to generate from, the gold answer, and its record's position."""

    messages: list[dict]
    answer: str | None  # None: the record has no gold (math_reward gives None: no learning signal)
    index: int

    def as_row(self) -> dict:
        """The row TRL's GRPOTrainer reads: ``prompt`` (conversational) and the ``answer`` column."""
        return {"prompt": self.messages, "answer": self.answer}


def _plain(value: Any) -> Any:
    """Nested numpy arrays and pandas scalars from a Parquet reader as plain lists and dicts."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m for m in value)


def _clean_messages(messages: list[dict]) -> list[dict]:
    return [
        {"role": str(m["role"]), "content": "" if m.get("content") is None else str(m["content"])}
        for m in messages
    ]


def _prompt_messages(record: dict) -> tuple[list[dict], str | None]:
    """(prompt messages, gold read from the record's own assistant turn or completion, if any)."""
    prompt = record.get("prompt")
    if _is_messages(prompt):
        return _clean_messages(prompt), None
    if isinstance(prompt, str) and prompt.strip():
        return [{"role": "user", "content": prompt}], None
    for key in ("question", "problem"):
        text = record.get(key)
        if isinstance(text, str) and text.strip():
            return [{"role": "user", "content": text}], None
    messages = record.get("messages")
    if _is_messages(messages):
        messages = _clean_messages(messages)
        last_assistant = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last_assistant is None:
            return messages, None
        gold = normalize_gold(messages[last_assistant]["content"], column="solution")
        return messages[:last_assistant], gold
    raise UserError(
        "record has no prompt: give it `prompt` (text or chat messages), `question`, `problem` or `messages` "
        f"(its fields are: {', '.join(sorted(record)) or 'none'})"
    )


def _gold(record: dict) -> str | None:
    for column, kind in _GOLD_SOURCES:
        value = record.get(column)
        if column == "completion" and _is_messages(value):
            value = "\n".join(str(m.get("content") or "") for m in value if m.get("role") == "assistant")
        gold = normalize_gold(value, column=kind) if value is not None else None
        if gold:
            return gold
    return None


def rl_prompt(record: dict, *, index: int = 0, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> RLPrompt:
    """The RL view of one record (see the module table); ``answer`` is None when it has no gold.

    Raises UserError when the record has no prompt.
    """
    record = _plain(record)
    messages, gold_from_turn = _prompt_messages(record)
    if not any(m["role"] == "user" for m in messages):
        raise UserError("record's prompt has no user turn; RL prompts need the question as a user message")
    if system_prompt and not any(m["role"] == "system" for m in messages):
        messages = [{"role": "system", "content": system_prompt}, *messages]
    return RLPrompt(messages=messages, answer=_gold(record) or gold_from_turn, index=index)


def rl_prompts_from_records(
    records: Sequence[dict],
    *,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    missing_gold: str = "keep",
    source: str = "data",
) -> list[RLPrompt]:
    """:func:`rl_prompt` for every record; an error names the record (its ``_source``, else ``source:row``).

    ``missing_gold``: what to do with records that have no gold answer: "keep" them (answer None),
    "drop" them (with a warning that counts them), or raise an "error" naming the first one.
    """
    if missing_gold not in MISSING_GOLD:
        raise UserError(f"missing_gold must be one of {', '.join(MISSING_GOLD)}, got {missing_gold!r}")
    out = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise UserError(
                f"{source}:{i + 1}: expected a JSON object per record, got {type(record).__name__}"
            )
        try:
            out.append(rl_prompt(record, index=i, system_prompt=system_prompt))
        except UserError as e:
            where = record.get("_source") or f"{source}:{i + 1}"  # load_records tags each record "file:line"
            raise UserError(f"{where}: {e}") from None
    if not out:
        raise UserError(f"{source} has no records; pass a file with at least one prompt")
    missing = [p for p in out if p.answer is None]
    if missing:
        first = records[missing[0].index].get("_source") or f"{source}:{missing[0].index + 1}"
        if missing_gold == "error":
            raise UserError(
                f"{first}: record has no gold answer: add `answer` (or `ground_truth`, "
                "`reward_model.ground_truth`, or a `solution` with a \\boxed{} answer), or pass missing_gold=drop"
            )
        action = "dropped" if missing_gold == "drop" else "kept (reward None: no learning signal)"
        logger.warning(
            "%d of %d prompts have no gold answer (first: %s); %s", len(missing), len(out), first, action
        )
        if missing_gold == "drop":
            out = [p for p in out if p.answer is not None]
    return out


def load_rl_prompts(
    path: str | Path,
    *,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    missing_gold: str = "keep",
    limit: int | None = None,
) -> list[RLPrompt]:
    """Read a prompt file (any layout in the module table) into RL prompts, the first ``limit`` records if given."""
    from sedsft.data import load_records

    records = load_records(path)
    if limit is not None:
        records = records[:limit]
    return rl_prompts_from_records(
        records, system_prompt=system_prompt, missing_gold=missing_gold, source=str(path)
    )


def to_dataset(prompts: Sequence[RLPrompt]):
    """A ``datasets.Dataset`` with the columns GRPOTrainer and :func:`math_reward` read."""
    from datasets import Dataset

    return Dataset.from_list([p.as_row() for p in prompts])
