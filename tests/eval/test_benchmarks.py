"""The 8 benchmark files load with their exact sizes, and each one's own solutions grade as correct."""

from __future__ import annotations

import json
import random

import pytest

from sedsft.errors import UserError
from sedsft.eval.benchmarks import BENCHMARKS, DATA_DEFECTS, load, normalize_gold, parse_names
from sedsft.eval.grading import is_correct

ROWS = {
    "aime24": 30,
    "aime25": 30,
    "amc23": 40,
    "gsm8k": 1319,
    "math": 500,
    "gaokao2023en": 385,
    "olympiadbench": 675,
    "college_math": 2818,
}


@pytest.mark.parametrize("name", BENCHMARKS)
def test_loads_with_exact_row_count_and_non_empty_golds(name, data_dir):
    problems = load(name, data_dir)
    assert len(problems) == ROWS[name]
    assert len({p.id for p in problems}) == len(problems)
    for p in problems:
        assert p.benchmark == name
        assert isinstance(p.answer, str) and p.answer.strip()
        assert isinstance(p.question, str) and p.question.strip()


@pytest.mark.parametrize(
    "name,index,answer",
    [
        ("amc23", 0, "27"),  # float 27.0 in the file
        ("aime24", 7, "025"),  # zero padding kept; the grader accepts 25
        ("gsm8k", 0, "18"),  # after ####
        ("gaokao2023en", 167, "$\\frac{3}{10}$"),  # empty in the file, appended to the question
        ("gaokao2023en", 107, "145"),  # "$145$solution:" in the file
        ("olympiadbench", 0, "2"),  # final_answer list
    ],
)
def test_gold_field_per_layout(name, index, answer, data_dir):
    p = load(name, data_dir)[index]
    assert p.answer == answer
    assert "answers:" not in p.question


def test_limit_takes_the_first_problems(data_dir):
    assert [p.id for p in load("math", data_dir, limit=3)] == [p.id for p in load("math", data_dir)[:3]]


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda d: load("mmlu", d), "unknown benchmark 'mmlu'"),
        (lambda d: load("math", d / "nowhere"), "not found"),
        (lambda d: parse_names("gsm8k,aime2024"), "unknown benchmark 'aime2024'"),
    ],
)
def test_bad_names_and_folders_are_user_errors(call, message, data_dir):
    with pytest.raises(UserError, match=message):
        call(data_dir)


def test_parse_names_all_is_the_paper_order():
    assert parse_names("all") == list(BENCHMARKS)
    assert parse_names("math, gsm8k") == ["math", "gsm8k"]


def test_a_folder_name_names_its_benchmark(data_dir):
    # the shared data keeps the paper's MATH500 in math500/; both names mean the paper's "math"
    assert parse_names("math500,gsm8k") == ["math", "gsm8k"]
    assert parse_names("math,math500") == ["math"]
    assert load("math500", data_dir, limit=2) == load("math", data_dir, limit=2)
    assert {p.benchmark for p in load("math500", data_dir, limit=2)} == {"math"}


@pytest.mark.parametrize("name", ["aime24", "gsm8k", "math"])
def test_reference_solutions_grade_correct_and_shuffled_golds_do_not(name, data_dir):
    problems = [p for p in load(name, data_dir) if p.reference]
    assert len(problems) >= 29
    own = sum(is_correct(p.reference, p.answer) for p in problems) / len(problems)
    golds = [p.answer for p in problems]
    random.Random(0).shuffle(golds)
    shuffled = sum(is_correct(p.reference, g) for p, g in zip(problems, golds)) / len(problems)
    assert own >= 0.97, own
    assert shuffled <= 0.02, shuffled


@pytest.mark.parametrize("defect", DATA_DEFECTS, ids=lambda d: f"{d.benchmark}-{d.problem_id}")
def test_known_data_defects_are_repaired(defect, data_dir, tmp_path):
    problem = next(p for p in load(defect.benchmark, data_dir) if p.id == defect.problem_id)
    assert problem.answer == defect.answer and problem.answer != defect.published
    assert not defect.leaked or defect.leaked not in problem.question
    # the file still publishes the defect (the list is not stale) ...
    rows = [json.loads(t) for t in (data_dir / defect.benchmark / "test.jsonl").read_text().splitlines()]
    field = "final_answer" if defect.benchmark == "olympiadbench" else "answer"
    if defect.benchmark == "olympiadbench":
        index = next(i for i, r in enumerate(rows) if str(r["id"]) == defect.problem_id)
    else:  # gaokao2023en ids are line numbers, college_math's "line:question_number"
        index = int(defect.problem_id.split(":")[0])
    assert (normalize_gold(rows[index][field]) or "") == defect.published
    # ... and once the file is corrected, the row is read as it is
    rows[index][field] = ["7"] if field == "final_answer" else "7"
    (tmp_path / defect.benchmark).mkdir()
    (tmp_path / defect.benchmark / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert next(p for p in load(defect.benchmark, tmp_path) if p.id == defect.problem_id).answer == "7"


def test_one_gold_normalisation_for_benchmarks_and_rewards():
    from sedsft.rl import rewards

    assert rewards.normalize_gold is normalize_gold
    assert normalize_gold(27.0) == "27" and normalize_gold(["$1$", "2"]) == "$1$, 2"
    assert normalize_gold("Janet ... #### 1,234") == "1234"
    assert normalize_gold(r"so \boxed{4} and \boxed{5}", column="solution") == "4, 5"


@pytest.mark.parametrize(
    "row,message",
    [
        ({"problem": 12345, "answer": "1"}, "'problem' must be a non-empty string"),
        ({"problem": "What?", "answer": None}, "no gold answer"),
        ([1, 2], "a JSON object per line"),
    ],
)
def test_bad_benchmark_rows_name_the_line(row, message, tmp_path):
    (tmp_path / "aime24").mkdir()
    good = json.dumps({"problem": "1+1?", "answer": 42})  # a number as the gold is fine
    (tmp_path / "aime24" / "test.jsonl").write_text(good + "\n" + json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=message) as e:
        load("aime24", tmp_path)
    assert "test.jsonl:2" in str(e.value)
