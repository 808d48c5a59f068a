"""The paper's eight math benchmarks, read from their public JSONL layouts into one `Problem` type.

Each benchmark folder under ``data_dir`` holds a ``test.jsonl`` with the field names of the public
math-evaluation suites (Qwen2.5-Math's). Field names differ per benchmark; this module maps them:

| name          | folder        | question                     | gold answer                           |
| ------------- | ------------- | ---------------------------- | ------------------------------------- |
| aime24/aime25 | same          | ``problem``                  | ``answer`` (may be zero-padded "073") |
| amc23         | amc23         | ``question``                 | ``answer`` (float 27.0 -> "27")       |
| gsm8k         | gsm8k         | ``question``                 | ``answer`` after ``####``             |
| math          | math500       | ``problem``                  | ``answer``                            |
| gaokao2023en  | gaokao2023en  | ``question``                 | ``answer``                            |
| olympiadbench | olympiadbench | ``context`` + ``question``   | ``final_answer`` joined by ", "       |
| college_math  | college_math  | ``question``                 | ``answer``                            |

``reference`` keeps the row's own worked solution where the benchmark publishes one (math500,
gsm8k, aime24); tests grade it against the gold to check the grader.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sedsft.errors import UserError

BENCHMARKS: tuple[str, ...] = (
    "aime24",
    "aime25",
    "amc23",
    "gsm8k",
    "math",
    "gaokao2023en",
    "olympiadbench",
    "college_math",
)


@dataclass(frozen=True)
class Problem:
    """One evaluation problem. ``answer`` is the gold as a string; ``id`` is unique within its benchmark."""

    id: str
    question: str
    answer: str
    benchmark: str
    reference: str | None = None  # the benchmark's own worked solution, when it has one


def _gold_text(value) -> str:
    # amc23 stores 27.0: a whole float is the integer "27"; everything else is its string.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _aime(name: str, i: int, row: dict) -> Problem:
    solution = row.get("solution")
    # aime25's "solution" is only the answer again; keep it only when it is a worked solution.
    reference = solution if isinstance(solution, str) and len(solution) > 40 else None
    return Problem(str(row.get("id", i)), row["problem"], _gold_text(row["answer"]), name, reference)


def _amc23(name: str, i: int, row: dict) -> Problem:
    return Problem(str(row.get("id", i)), row["question"], _gold_text(row["answer"]), name)


def _gsm8k(name: str, i: int, row: dict) -> Problem:
    solution = row["answer"]
    gold = solution.split("####")[-1].strip().replace(",", "")
    return Problem(str(row.get("idx", i)), row["question"], gold, name, solution)


def _math(name: str, i: int, row: dict) -> Problem:
    pid = row.get("unique_id") or str(i)
    return Problem(pid, row["problem"], _gold_text(row["answer"]), name, row.get("solution"))


_TRAILING_ANSWER_RE = re.compile(r"\s*answers?\s*:\s*(\S.*?)\s*$", re.IGNORECASE | re.DOTALL)


def _gaokao(name: str, i: int, row: dict) -> Problem:
    question, gold = row["question"], _gold_text(row["answer"])
    if not gold:
        # Two public rows (HMMT2023General_9, 052023SATS4_11) have an empty "answer" and the answer
        # appended to the question ("...answers: $\\frac{3}{10}$"): move it back, so the model does
        # not see it and the row can be graded.
        m = _TRAILING_ANSWER_RE.search(question)
        if m is None:
            raise KeyError("answer")
        question, gold = question[: m.start()], m.group(1).strip()
    return Problem(str(i), question, gold, name)


def _olympiad(name: str, i: int, row: dict) -> Problem:
    question = row["question"]
    if row.get("context"):
        question = f"{row['context'].strip()}\n\n{question}"
    gold = ", ".join(_gold_text(a) for a in row["final_answer"])
    return Problem(str(row.get("id", i)), question, gold, name)


def _college(name: str, i: int, row: dict) -> Problem:
    pid = f"{i}:{row.get('question_number', '')}"
    return Problem(pid, row["question"], _gold_text(row["answer"]), name)


# name -> (folder, row -> Problem)
_LAYOUTS: dict[str, tuple[str, Callable[[str, int, dict], Problem]]] = {
    "aime24": ("aime24", _aime),
    "aime25": ("aime25", _aime),
    "amc23": ("amc23", _amc23),
    "gsm8k": ("gsm8k", _gsm8k),
    "math": ("math500", _math),
    "gaokao2023en": ("gaokao2023en", _gaokao),
    "olympiadbench": ("olympiadbench", _olympiad),
    "college_math": ("college_math", _college),
}


def parse_names(spec: str) -> list[str]:
    """``"all"`` or a comma-separated list of benchmark names, validated, in the given order."""
    names = list(BENCHMARKS) if spec.strip() == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in _LAYOUTS]
    if unknown or not names:
        raise UserError(
            f"unknown benchmark {unknown[0] if unknown else spec!r}; choose from: all, {', '.join(BENCHMARKS)}"
        )
    return names


def load(name: str, data_dir: str | Path, *, limit: int | None = None) -> list[Problem]:
    """The problems of one benchmark, in file order (the first ``limit`` when given)."""
    if name not in _LAYOUTS:
        raise UserError(f"unknown benchmark {name!r}; choose from: {', '.join(BENCHMARKS)}")
    folder, make = _LAYOUTS[name]
    path = Path(data_dir) / folder / "test.jsonl"
    if not path.is_file():
        raise UserError(
            f"benchmark file {path} not found; point --data_dir at the folder holding {folder}/test.jsonl"
        )
    problems: list[Problem] = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            if limit is not None and len(problems) >= limit:
                break
            try:
                problems.append(make(name, i, json.loads(line)))
            except (KeyError, TypeError, json.JSONDecodeError) as e:
                raise UserError(
                    f"{path}:{i + 1}: not in the {name} layout ({e!r}); use the public JSONL file"
                ) from e
    return problems
