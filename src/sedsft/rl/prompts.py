"""RL prompts: one chat prompt and one gold answer per record, from the layouts SFT data comes in.

| layout                      | prompt                                    | gold answer                                |
| --------------------------- | ----------------------------------------- | ------------------------------------------ |
| verl (the paper's RL set)   | ``prompt`` (list of chat messages)        | ``reward_model.ground_truth``              |
| question / problem          | ``question`` or ``problem`` (user turn)   | ``answer``, ``ground_truth``, ``final_answer``, or the boxed answer of ``solution`` / ``response`` |
| prompt / completion         | ``prompt`` (text or messages)             | as above, or the boxed answer of ``completion`` |
| messages                    | the turns before the last assistant turn  | as above, or the boxed answer of that assistant turn |

A prompt without a system turn gets ``system_prompt`` (the paper's, by default); a prompt that has
one keeps it. Records are read with ``sedsft.data.load_records`` (JSONL, JSON, Parquet or a folder).
Text fields (the prompt, question, problem, message contents, a worked solution) must hold text: a
number or a list there is refused naming the file, line and field; gold columns (``answer`` ...) may
hold numbers or lists (``normalize_gold``). :func:`bound_prompts` fits prompts to a model's context.
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
    source: str = ""  # "file.jsonl:12", for messages

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


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)  # NaN: a missing Parquet cell


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _text_field(record: dict, name: str) -> str | None:
    """The text in ``record[name]``, None when absent; any other type is refused naming the field."""
    value = record.get(name)
    if _absent(value):
        return None
    if not isinstance(value, str):
        raise UserError(f"field {name!r} must be text, got {_kind(value)}; write it as a string")
    return value


def _clean_messages(messages: list[dict], name: str) -> list[dict]:
    out = []
    for i, m in enumerate(messages):
        content = m.get("content")
        if not _absent(content) and not isinstance(content, str):
            raise UserError(f"field {name!r}: message {i} content must be text, got {_kind(content)}")
        out.append({"role": str(m["role"]), "content": "" if _absent(content) else content})
    return out


def _messages_field(record: dict, name: str) -> list[dict] | None:
    value = record.get(name)
    if _absent(value):
        return None
    if not _is_messages(value):
        raise UserError(
            f"field {name!r} must be a list of chat messages ({{'role': ..., 'content': ...}}), got {_kind(value)}"
        )
    return _clean_messages(value, name)


def _prompt_messages(record: dict) -> tuple[list[dict], str | None]:
    """(prompt messages, gold read from the record's own assistant turn or completion, if any)."""
    prompt = record.get("prompt")
    if _is_messages(prompt):
        return _clean_messages(prompt, "prompt"), None
    if not _absent(prompt) and not isinstance(prompt, str):
        raise UserError(f"field 'prompt' must be text or a list of chat messages, got {_kind(prompt)}")
    if isinstance(prompt, str) and prompt.strip():
        return [{"role": "user", "content": prompt}], None
    for key in ("question", "problem"):
        text = _text_field(record, key)
        if text is not None and text.strip():
            return [{"role": "user", "content": text}], None
    messages = _messages_field(record, "messages")
    if messages is not None:
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
    reward_model = record.get("reward_model")
    if not _absent(reward_model) and not isinstance(reward_model, dict):
        raise UserError(
            f"field 'reward_model' must be an object with 'ground_truth', got {_kind(reward_model)}"
        )
    for column, kind in _GOLD_SOURCES:
        value = record.get(column)
        if column == "completion" and _is_messages(value):
            value = "\n".join(
                m["content"] for m in _clean_messages(value, column) if m["role"] == "assistant"
            )
        elif kind == "solution":  # a worked solution is text; an answer column may be a number or a list
            value = _text_field(record, column)
        gold = normalize_gold(value, column=kind) if value is not None else None
        if gold:
            return gold
    return None


def rl_prompt(
    record: dict, *, index: int = 0, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT, source: str = ""
) -> RLPrompt:
    """The RL view of one record (see the module table); ``answer`` is None when it has no gold.

    Raises UserError when the record has no prompt.
    """
    record = _plain(record)
    messages, gold_from_turn = _prompt_messages(record)
    if not any(m["role"] == "user" for m in messages):
        raise UserError("record's prompt has no user turn; RL prompts need the question as a user message")
    if system_prompt and not any(m["role"] == "system" for m in messages):
        messages = [{"role": "system", "content": system_prompt}, *messages]
    return RLPrompt(messages=messages, answer=_gold(record) or gold_from_turn, index=index, source=source)


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
        where = record.get("_source") or f"{source}:{i + 1}"  # load_records tags each record "file:line"
        try:
            out.append(rl_prompt(record, index=i, system_prompt=system_prompt, source=where))
        except UserError as e:
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

    records = load_records(path, limit=limit)  # only the first ``limit`` records are read
    return rl_prompts_from_records(
        records, system_prompt=system_prompt, missing_gold=missing_gold, source=str(path)
    )


def bound_prompts(
    prompts: Sequence[RLPrompt], tokenizer, *, limit, overflow: str, what: str = "prompts"
) -> list[RLPrompt]:
    """``prompts`` whose generation prompt fits ``limit`` (a :class:`sedsft.limits.TokenLimit`), per
    ``overflow`` (:func:`sedsft.limits.bound_prompt`): dropped ones are counted in a warning naming the
    first, ``error`` refuses the first naming its file and line. A prompt keeps its ``index``."""
    from dataclasses import replace

    from sedsft.limits import bound_prompt

    out, dropped, truncated = [], [], 0
    for p in prompts:
        messages = bound_prompt(
            tokenizer, p.messages, limit=limit, overflow=overflow, source=p.source or f"prompt {p.index}"
        )
        if messages is None:
            dropped.append(p.source or f"prompt {p.index}")
            continue
        truncated += messages is not p.messages
        out.append(p if messages is p.messages else replace(p, messages=messages))
    if truncated:
        logger.warning("%d of %d %s cut to fit %s", truncated, len(prompts), what, limit)
    if dropped:
        logger.warning(
            "%d of %d %s dropped as longer than %s (first: %s)",
            len(dropped),
            len(prompts),
            what,
            limit,
            dropped[0],
        )
    if not out:
        raise UserError(
            f"every one of the {len(prompts)} {what} is longer than {limit}; shorten them or use a model with a longer context"
        )
    return out


def to_dataset(prompts: Sequence[RLPrompt]):
    """A ``datasets.Dataset`` with the columns GRPOTrainer and :func:`math_reward` read."""
    from datasets import Dataset

    return Dataset.from_list([p.as_row() for p in prompts])
