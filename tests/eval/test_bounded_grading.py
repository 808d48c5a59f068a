"""Pathological responses are graded quickly, and a grader that hangs is cut off by the pool."""

from __future__ import annotations

import time

import pytest

from sedsft.eval.grader_pool import GraderPool
from sedsft.eval.grading import is_correct

NESTED = r"\boxed{" + r"\frac{" * 2000 + "1" + "}{2}" * 2000 + "}"
PATHOLOGICAL = {
    "200k_chars_then_box": "Let me think. " * 14_300 + r"\boxed{42}",
    "200k_digits": "1" * 200_000,
    "200k_open_boxes": r"\boxed{" * 28_000,
    "deep_frac_nesting": NESTED,
    "long_text_then_deep_nesting": "x " * 100_000 + NESTED,
    "deep_sqrt_in_box": r"\boxed{" + r"\sqrt{" * 40 + "2" + "}" * 40 + "}",
    "deep_parentheses": r"\boxed{" + "(" * 5_000 + "1" + ")" * 5_000 + "}",
    "many_boxes": r"\boxed{1+1}" * 20_000,
}


@pytest.mark.parametrize("name", PATHOLOGICAL)
def test_pathological_response_is_graded_within_two_seconds(name):
    response = PATHOLOGICAL[name]
    start = time.perf_counter()
    result = is_correct(response, "42")
    assert time.perf_counter() - start < 2.0
    assert result is (name == "200k_chars_then_box")


def _hang(response: str, gold: str) -> bool:  # module level: the pool pickles graders by name
    time.sleep(60)
    return True


def test_pool_grades_in_order_and_times_out_a_hanging_grader():
    with GraderPool(workers=2, timeout_s=1.0) as pool:
        tasks = [(r"\boxed{4}", "4"), (r"\boxed{5}", "4"), (PATHOLOGICAL["long_text_then_deep_nesting"], "1")]
        grades = pool.grade(tasks)
        assert [g.correct for g in grades] == [True, False, False]
        assert grades[0].extracted == "4"
        start = time.perf_counter()
        hung = pool.grade([("a", "b"), ("c", "d"), ("e", "f")], grader=_hang)
        assert time.perf_counter() - start < 20  # three 1 s timeouts plus worker restarts, not 3 minutes
        assert all(g.timed_out and not g.correct for g in hung) and pool.num_timeouts == 3
        assert pool.grade([(r"\boxed{1}", "1")])[0].correct  # replaced workers keep working


def test_pool_rejects_bad_settings():
    with pytest.raises(ValueError, match="workers"):
        GraderPool(workers=0)
