"""Pathological responses are graded without hanging; the pool enforces a hard limit, checks its
settings, serves several threads at once and keeps Ctrl-C to the parent."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from sedsft.errors import UserError
from sedsft.eval.grader_pool import GraderPool, InProcessGrader, grade_one, open_grader
from sedsft.eval.grading import grade

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
    "many_dollars": "$x$ " * 50_000,
    "many_phrases": "the answer is " * 20_000,
    "huge_integer_fraction": r"\boxed{" + "1" * 320 + "/3}",
}


@pytest.mark.parametrize("name", PATHOLOGICAL)
def test_pathological_response_is_graded_without_error(name):
    result = grade(PATHOLOGICAL[name], "42", timeout_s=60)
    assert not result.timed_out and result.error is None
    assert result.correct is (name == "200k_chars_then_box")


def test_a_power_tower_is_cut_off_by_the_time_limit():
    result = grade(r"\boxed{9^{9^{9}}}", "1", timeout_s=0.5)
    assert result.correct is False and result.timed_out and "timed out" in result.error


def _hang(response: str, gold: str) -> bool:  # module level: the pool pickles graders by name
    time.sleep(60)
    return True


def _explode(response: str, gold: str) -> bool:
    raise OverflowError("integer division result too large for a float")


def test_pool_grades_in_order_and_times_out_a_hanging_grader():
    with GraderPool(workers=2, timeout_s=1.0) as pool:
        tasks = [(r"\boxed{4}", "4"), (r"\boxed{5}", "4"), (PATHOLOGICAL["long_text_then_deep_nesting"], "1")]
        grades = pool.grade(tasks)
        assert [g.correct for g in grades] == [True, False, False]
        assert grades[0].extracted == "4"
        start = time.perf_counter()
        hung = pool.grade([("a", "b"), ("c", "d"), ("e", "f")], grader=_hang)
        assert time.perf_counter() - start < 30  # three 1 s limits (workers restart in the background)
        assert all(g.timed_out and not g.correct and g.error for g in hung) and pool.num_timeouts == 3
        assert pool.grade([(r"\boxed{1}", "1")])[0].correct  # replaced workers keep working


def test_a_failing_grader_grades_incorrect_with_its_reason_in_both_modes():
    for grader in (InProcessGrader(), GraderPool(workers=1, timeout_s=5.0)):
        with grader:
            (g,) = grader.grade([(r"\boxed{4}", "4")], grader=_explode)
        assert not g.correct and g.error.startswith("OverflowError") and g.extracted == "4"


def test_pool_serves_several_threads_at_once():
    tasks = [(rf"\boxed{{{i}}}", str(i if i % 3 else i + 1)) for i in range(12)]
    expected = [bool(i % 3) for i in range(12)]
    out: dict[int, list[bool]] = {}
    with GraderPool(workers=2, timeout_s=10.0) as pool:

        def run(k: int) -> None:
            out[k] = [g.correct for g in pool.grade(tasks)]

        threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert out == {k: expected for k in range(4)}


@pytest.mark.parametrize(
    "workers,timeout_s,message",
    [
        (2, math.nan, "finite"),
        (2, math.inf, "finite"),
        (2, -1.0, "> 0"),
        (2, 0, "> 0"),
        (-1, 2.0, "integer >= 0"),
        (1.5, 2.0, "integer >= 0"),
        (True, 2.0, "integer >= 0"),
        (0, math.nan, "finite"),  # no pool, still no meaningless limit
    ],
)
def test_grading_settings_are_checked(workers, timeout_s, message):
    with pytest.raises(UserError, match=message), open_grader(workers=workers, timeout_s=timeout_s):
        pass


def test_pool_needs_a_worker():
    with pytest.raises(UserError, match="workers >= 1"):
        GraderPool(workers=0)


def test_in_process_grading_of_a_hanging_grader_is_cut_off_in_the_main_thread():
    g = grade_one("a", "b", _hang, timeout_s=0.3)
    assert g.timed_out and not g.correct


_CTRL_C_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from sedsft.eval.grader_pool import GraderPool
    from tests.eval.test_bounded_grading import _hang
    pool = GraderPool(workers=2, timeout_s=60.0)
    print("ready", flush=True)
    try:
        pool.grade([("a", "b"), ("c", "d")], grader=_hang)
    except KeyboardInterrupt:
        pool.close()
        print("interrupted cleanly", file=sys.stderr)
        sys.exit(130)
    """
)


def test_ctrl_c_reaches_only_the_parent():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(root, "src"), root])}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CTRL_C_SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=root,
        start_new_session=True,  # its own process group: the Ctrl-C goes to the parent and its workers
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # both workers are inside the hanging grader
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert err.strip() == "interrupted cleanly", err  # no KeyboardInterrupt traceback from a worker
