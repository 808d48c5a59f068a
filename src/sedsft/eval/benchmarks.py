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

A benchmark may also be named by its folder (``math500`` for ``math``). ``reference`` keeps the row's own worked solution where the benchmark publishes one (math500,
gsm8k, aime24); tests grade it against the gold to check the grader. Golds go through
:func:`normalize_gold` (also used for RL prompts and rewards), and the rows listed in
:data:`DATA_DEFECTS` (known errors in the published files) are repaired.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sedsft.errors import UserError
from sedsft.eval.extract import boxed_answer

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


def normalize_gold(value: Any, *, column: str = "answer") -> str | None:
    """The gold answer string of a data value, or None when there is none: the one rule for every
    benchmark row, RL prompt and reward column.

    Whole floats print as integers (amc23's 27.0 -> "27"); NaN (a missing cell) is None; lists (and
    numpy arrays from Parquet) are joined by ", "; a dict (verl's ``reward_model``) gives its
    ``ground_truth``; an ``answer`` or ``solution`` in GSM8K style ("... #### 1,234") gives what
    follows ``####`` without thousands commas; a ``solution`` (a worked solution) gives its boxed
    answer, or the whole text when it has no box.
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
            return ", ".join(v for v in items if v) or None
        value = str(value)
    text = value.strip()
    if not text:
        return None
    if column == "solution" and ("\\boxed" in text or "\\fbox" in text):
        return boxed_answer(text, loose=True)
    if column in ("answer", "solution") and "####" in text:
        return text.rsplit("####", 1)[-1].strip().replace(",", "") or None
    return text


@dataclass(frozen=True)
class DataDefect:
    """A known error in a published benchmark file, and the gold the loader uses instead.

    A repair applies only while the row still holds ``published`` (a corrected file is read as is).
    """

    benchmark: str
    problem_id: str  # as the loader names the row (``Problem.id``)
    what: str  # what is wrong, for docs/evaluation.md
    published: str  # the gold as the file gives it (joined, for list golds)
    answer: str  # the gold the loader uses
    leaked: str = ""  # the answer as appended to the end of the question, cut from it


DATA_DEFECTS: tuple[DataDefect, ...] = (
    DataDefect(
        "gaokao2023en",
        "107",
        "PurpleMeet2023_16: the label 'solution:' is glued to the gold",
        "$145$solution:",
        "145",
    ),
    DataDefect(
        "gaokao2023en",
        "167",
        "HMMT2023General_9: empty gold, the answer appended to the question",
        "",
        "$\\frac{3}{10}$",
        leaked="answers: $\\frac{3}{10}$",
    ),
    DataDefect(
        "gaokao2023en",
        "192",
        "052023SATS4_11: empty gold, the answer appended to the question",
        "",
        "A",
        leaked="Answer: A",
    ),
    DataDefect("olympiadbench", "2349", "a stray $ splits the gold m, n = 221, 8", "$221,$8$", "221, 8"),
    DataDefect(
        "college_math",
        "1102:exercise.10.1.3",
        "an unclosed $ and a trailing \\quad",
        "$-317^{\\circ} 3^{\\prime} 36^{\\prime \\prime} \\quad",
        "$-317^{\\circ} 3^{\\prime} 36^{\\prime \\prime}$",
    ),
    DataDefect(
        "college_math",
        "2037:exercise.1.3.9",
        "an unclosed $",
        "Yes, since $\\mathbf{v} \\cdot \\mathbf{w}=0",
        "Yes, since $\\mathbf{v} \\cdot \\mathbf{w}=0$",
    ),
    DataDefect(
        "college_math",
        "2288:exercise.2.7.12",
        "the gold is the whole computation, with a stray closing $; the volume it asks for is 113",
        "\\left(\\left[\\begin{array}{l}1 \\\\ 1 \\\\ 3\\end{array}\\right] \\times\\left[\\begin{array}{r}-7 \\\\ -2 \\\\ 2"
        "\\end{array}\\right]\\right) \\cdot\\left[\\begin{array}{r}-5 \\\\ -6 \\\\ 3\\end{array}\\right]=\\left["
        "\\begin{array}{r}8 \\\\ -23 \\\\ 5\\end{array}\\right] \\cdot\\left[\\begin{array}{r}-5 \\\\ -6 \\\\ 3"
        "\\end{array}\\right]=113$",
        "113",
    ),
)
_DEFECTS = {(d.benchmark, d.problem_id): d for d in DATA_DEFECTS}


def _repair(problem: Problem) -> Problem:
    d = _DEFECTS.get((problem.benchmark, problem.id))
    if d is None or problem.answer != d.published:
        return problem
    question = problem.question
    if d.leaked and question.rstrip().endswith(d.leaked):
        question = question.rstrip()[: -len(d.leaked)].rstrip()
    return replace(problem, question=question, answer=d.answer)


def _text(row: dict, field: str) -> str:
    value = row[field]
    if not isinstance(value, str) or not value.strip():
        raise TypeError(f"field {field!r} must be a non-empty string, got {value!r:.40}")
    return value


def _gold(row: dict, field: str, *, column: str = "answer") -> str:
    # "" for a missing gold: a known defect may supply it (_repair), else load() reports the row
    return normalize_gold(row[field], column=column) or ""


def _aime(name: str, i: int, row: dict) -> Problem:
    solution = row.get("solution")
    # aime25's "solution" is only the answer again; keep it only when it is a worked solution.
    reference = solution if isinstance(solution, str) and len(solution) > 40 else None
    return Problem(str(row.get("id", i)), _text(row, "problem"), _gold(row, "answer"), name, reference)


def _amc23(name: str, i: int, row: dict) -> Problem:
    return Problem(str(row.get("id", i)), _text(row, "question"), _gold(row, "answer"), name)


def _gsm8k(name: str, i: int, row: dict) -> Problem:
    return Problem(
        str(row.get("idx", i)), _text(row, "question"), _gold(row, "answer"), name, _text(row, "answer")
    )


def _math(name: str, i: int, row: dict) -> Problem:
    pid = row.get("unique_id") or str(i)
    return Problem(pid, _text(row, "problem"), _gold(row, "answer"), name, row.get("solution"))


def _gaokao(name: str, i: int, row: dict) -> Problem:
    return Problem(str(i), _text(row, "question"), _gold(row, "answer"), name)


def _olympiad(name: str, i: int, row: dict) -> Problem:
    question = _text(row, "question")
    if row.get("context"):
        question = f"{row['context'].strip()}\n\n{question}"
    return Problem(str(row.get("id", i)), question, _gold(row, "final_answer"), name)


def _college(name: str, i: int, row: dict) -> Problem:
    pid = f"{i}:{row.get('question_number', '')}"
    return Problem(pid, _text(row, "question"), _gold(row, "answer"), name)


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


# a benchmark's folder name, where it differs from the paper's name, names it too
ALIASES: dict[str, str] = {folder: name for name, (folder, _) in _LAYOUTS.items() if folder != name}


def canonical_name(name: str) -> str:
    """The paper's name of a benchmark given by that name or by its folder's (``math500`` -> ``math``)."""
    name = ALIASES.get(name, name)
    if name not in _LAYOUTS:
        also = ", ".join(f"{a} (= {n})" for a, n in ALIASES.items())
        raise UserError(f"unknown benchmark {name!r}; choose from: all, {', '.join(BENCHMARKS)}, or {also}")
    return name


def parse_names(spec: str) -> list[str]:
    """``"all"`` or a comma-separated list of benchmark names (or folder names), validated, in the given
    order, each once, by the paper's names."""
    given = list(BENCHMARKS) if spec.strip() == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    if not given:
        raise UserError(f"no benchmark in {spec!r}; choose from: all, {', '.join(BENCHMARKS)}")
    return list(dict.fromkeys(canonical_name(n) for n in given))


def load(name: str, data_dir: str | Path, *, limit: int | None = None) -> list[Problem]:
    """The problems of one benchmark, in file order (the first ``limit`` when given)."""
    from sedsft.data import read_text

    name = canonical_name(name)
    folder, make = _LAYOUTS[name]
    path = Path(data_dir) / folder / "test.jsonl"
    if not path.is_file():
        raise UserError(
            f"benchmark file {path} not found; point --data_dir at the folder holding {folder}/test.jsonl"
        )
    problems: list[Problem] = []
    with io.StringIO(read_text(path), newline=None) as f:  # not UTF-8: file:line:column
        for i, line in enumerate(f):
            if not line.strip():
                continue
            if limit is not None and len(problems) >= limit:
                break
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise TypeError(f"a JSON object per line, got {type(row).__name__}")
                problem = _repair(make(name, i, row))
                if not problem.answer:
                    raise KeyError(
                        f"no gold answer in {'final_answer' if name == 'olympiadbench' else 'answer'}"
                    )
            except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
                raise UserError(
                    f"{path}:{i + 1}: not in the {name} layout ({e}); use the public JSONL file"
                ) from None
            problems.append(problem)
    return problems
