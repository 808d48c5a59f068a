"""math_reward agrees with the evaluation's grader; gold columns, conversational completions, None."""

from __future__ import annotations

import pytest

from sedsft.eval.grading import is_correct
from sedsft.rl.rewards import completion_text, math_reward, normalize_gold

# (completion, gold): grouped by phenomenon, graded both ways.
CASES = {
    "boxed integer": [("so \\boxed{4}", "4"), ("so \\boxed{5}", "4")],
    "fractions": [
        ("\\boxed{\\frac{1}{2}}", "\\frac12"),
        ("\\boxed{0.5}", "\\frac{1}{2}"),
        ("\\boxed{1/3}", "\\frac12"),
    ],
    "latex expressions": [("\\boxed{2\\sqrt{3}}", "2\\sqrt3"), ("\\boxed{x^2+1}", "1+x^2")],
    "phrases": [("The final answer is 42.", "42"), ("answer: 7", "8")],
    "numeric fallback": [("after all that we get 12", "12"), ("no number at all", "12")],
    "empty boxes": [("\\boxed{}", "3")],
    "thousands": [("\\boxed{42,409}", "42409"), ("\\boxed{11,\\! 111,\\! 100}", "11111100")],
    "matrices": [
        ("\\boxed{\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}")
    ],
    "equations": [("\\boxed{y = 1 - x}", "x+y=1"), ("\\boxed{x = 5}", "y=5")],
    "crash cases": [("\\boxed{" + "1" * 320 + "/3}", "1")],
}
TABLE = [(c, g) for group in CASES.values() for c, g in group]


@pytest.mark.parametrize(("completion", "gold"), TABLE)
def test_reward_matches_is_correct(completion, gold):
    assert math_reward([completion], answer=[gold]) == [float(is_correct(completion, gold))]


def test_reward_batch_and_missing_gold():
    completions = ["\\boxed{4}", "\\boxed{4}", "\\boxed{3}"]
    assert math_reward(completions, answer=["4", None, "4"]) == [1.0, None, 0.0]
    assert math_reward(completions) == [None, None, None]  # no gold column at all
    assert math_reward(["\\boxed{1}"], answer=[""]) == [None]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"answer": ["4"]}, [1.0]),
        ({"ground_truth": ["4"]}, [1.0]),
        ({"solution": ["2+2 is \\boxed{4}."]}, [1.0]),  # a worked solution: its boxed answer
        ({"solution": ["5"]}, [0.0]),  # a bare solution is the answer itself
        ({"reward_model": [{"style": "rule", "ground_truth": "4"}]}, [1.0]),  # verl's column
        ({"answer": ["... so 2+2 = 4.\n#### 4"]}, [1.0]),  # GSM8K style
        ({"answer": [4.0]}, [1.0]),  # amc23-style float
        ({"answer": ["4"], "solution": ["\\boxed{5}"]}, [1.0]),  # answer wins over solution
    ],
)
def test_gold_columns(kwargs, expected):
    assert math_reward(["we get \\boxed{4}"], **kwargs) == expected


def test_conversational_completions():
    conv = [
        [{"role": "assistant", "content": "It is \\boxed{4}"}],
        [{"role": "assistant", "content": "\\boxed{9}"}],
    ]
    assert math_reward(conv, answer=["4", "4"]) == [1.0, 0.0]
    blocks = [{"role": "assistant", "content": [{"type": "text", "text": "\\boxed{4}"}]}]
    assert completion_text(blocks) == "\\boxed{4}"


def test_trl_extra_kwargs_are_ignored():
    out = math_reward(
        ["\\boxed{4}"],
        prompts=["q"],
        completion_ids=[[1]],
        answer=["4"],
        trainer_state=None,
        log_metric=print,
    )
    assert out == [1.0]


def test_bad_columns_say_what_is_wrong():
    with pytest.raises(ValueError, match="3 values for 1 completions"):
        math_reward(["x"], answer=["1", "2", "3"])


@pytest.mark.parametrize(
    ("value", "column", "expected"),
    [
        (None, "answer", None),
        (float("nan"), "answer", None),
        (27.0, "answer", "27"),
        (["1", "2"], "answer", "1, 2"),
        ("  ", "answer", None),
        ("\\boxed{}", "solution", None),
    ],
)
def test_normalize_gold_edges(value, column, expected):
    assert normalize_gold(value, column=column) == expected


def test_pooled_reward_matches_in_process():
    from sedsft.rl.rewards import PooledMathReward

    completions = [c for c, _ in TABLE]
    golds = [g for _, g in TABLE]
    with PooledMathReward(workers=1, timeout_s=10.0) as reward:
        assert reward.__name__ == "math_reward"
        assert reward(completions + ["x"], answer=golds + [None]) == math_reward(
            completions, answer=golds
        ) + [None]


def test_a_grading_error_gives_zero_and_a_warning(monkeypatch, caplog):
    import logging

    from sedsft.eval.grading import Grade
    from sedsft.rl import rewards

    monkeypatch.setattr(rewards, "grade", lambda c, g: Grade("4", False, error="OverflowError: too large"))
    with caplog.at_level(logging.WARNING, logger="sedsft.rl.rewards"):
        assert math_reward(["\\boxed{4}"], answer=["4"]) == [0.0]
    assert "OverflowError: too large" in caplog.text


def test_pathological_completions_never_raise():
    completions = [
        "\\boxed{" + "1" * 320 + "/3}",
        "\\boxed{\\frac{1}{0}}",
        "\\boxed{\udc80}",
        "\\boxed{" * 5000,
    ]
    assert math_reward(completions, answer=["1"] * 4) == [0.0] * 4
