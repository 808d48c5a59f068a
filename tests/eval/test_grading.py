"""grade / extract_answer against the phenomenon tables (grading_tables.py) and the benchmarks' own golds."""

from __future__ import annotations

import re

import pytest

from sedsft.eval import compare, grading
from sedsft.eval.benchmarks import load
from sedsft.eval.grading import Grade, answers_match, extract_answer, grade, is_correct, normalize_answer

from .grading_tables import CASES, TABLES


@pytest.mark.parametrize(
    "gold,response,expected",
    [
        pytest.param(g, r, e, id=f"{group}-{i}")
        for group, rows in TABLES.items()
        for i, (g, r, e) in enumerate(rows)
    ],
)
def test_phenomenon_tables(gold, response, expected):
    result = grade(response, gold, timeout_s=1.0 if expected is False and "\\boxed{10^" in response else 3.0)
    assert isinstance(result, Grade) and result.correct is expected, result


def test_tables_are_not_passed_by_string_equality():
    """Most true rows write the gold and the answer differently: equality of strings cannot pass them."""
    true_rows = [(g, r) for _, g, r, e in CASES if e]
    differ = [
        (g, r) for g, r in true_rows if re.sub(r"\s", "", extract_answer(r) or "") != re.sub(r"\s|\$", "", g)
    ]
    assert len(differ) >= 0.7 * len(true_rows), len(differ)
    for group, rows in TABLES.items():
        assert any(not e for _, _, e in rows) or group == "golds_written_like_responses", group


EXTRACTIONS = [
    (r"so $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
    (r"\boxed{a} and then \boxed{b}", "b"),
    (r"\boxed{a} and \boxed{b}", "a, b"),
    (r"\boxed{a}. Then we find b = \boxed{b}", "b"),
    (r"\boxed{b} then \boxed{}", "b"),
    (r"\fbox{7}", "7"),
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
    ("x\n#### 1,234", "1,234"),
    ("The final answer is $x^2$. I hope it is correct.", "x^2"),
    (r"Final Answer: The final answer is $10$. I hope it is correct. Earlier: \boxed{7}", "10"),
    ("**Final Answer:** 42", "42"),
    ("Final Answer: The volume is 120.", "120"),
    ("The answer is:\n\\[\n x = 5\n\\]", "x = 5"),
    ("We get $x = 3$ and then $y = 4$.", "y = 4"),
    ("no numbers here", None),
    ("total 12 then 15", "15"),
    (r"\boxed{}", None),
    ("", None),
]


@pytest.mark.parametrize("response,expected", EXTRACTIONS)
def test_extract_answer(response, expected):
    assert extract_answer(response) == expected


def test_numeric_fallback_only_for_numeric_gold():
    assert is_correct("we get 2 and then x", "x") is False
    assert extract_answer("total 12", numeric_fallback=False) is None


def test_answers_match_is_symmetric():
    pairs = [
        ("0.5", "\\frac{1}{2}"),
        ("y=1-x", "x+y=1"),
        ("5", "x=5"),
        ("10\\%", "0.1"),
        ("3, 1, 2", "1,2,3"),
    ]
    for a, b in pairs:
        assert answers_match(a, b) and answers_match(b, a), (a, b)
    for a, b in [("x=5", "y=5"), ("2x+z=1", "1"), ("(1,2)", "(2,1)")]:
        assert not answers_match(a, b) and not answers_match(b, a), (a, b)


def test_normalisation_keeps_structure():
    assert (
        normalize_answer(r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}") == r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}"
    )
    assert normalize_answer(r"$\left[\begin{array}{rr}1 & 2\end{array}\right]$") == (
        r"\begin{pmatrix}1 & 2\end{pmatrix}"
    )
    assert normalize_answer(r"11,\! 111,\! 100") == "11111100"
    assert normalize_answer("x = 5") == "x = 5"  # an assignment is kept: the comparison decides


def test_code_in_a_response_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"__import__('pathlib').Path({str(marker)!r}).write_text('x')"
    for response in (rf"\boxed{{{payload}}}", f"The answer is {payload}", payload, f"${payload}$"):
        assert is_correct(response, "12345") is False
    assert not marker.exists()


def test_escaped_braces_inside_a_box_do_not_end_it():
    gold = r"$C(p)=\left\{\begin{array}{rll}6 p+1.5 & \text { if } & 1 \leq p \leq 5 \\ 5.5 p & \text { if } & p \geq 6\end{array}\right.$"
    assert is_correct(f"The answer is \\boxed{{{gold}}}.", gold)
    assert extract_answer(r"\boxed{\{1\}} and \boxed{\{2, 3\}}") == r"\{1\}, \{2, 3\}"


def test_a_grading_error_grades_incorrect_with_its_reason(monkeypatch):
    def broken(pred, gold):
        raise OverflowError("integer division result too large for a float")

    monkeypatch.setattr(grading, "answers_match", broken)
    result = grade(r"\boxed{4.0}", "4")
    assert result == Grade("4.0", False, error="OverflowError: integer division result too large for a float")


def test_time_limit_grades_a_slow_comparison_incorrect(monkeypatch):
    import time

    def slow_parse(answer):  # SymPy work that does not end
        time.sleep(30)
        return []

    monkeypatch.setattr(compare, "parse_answer", slow_parse)
    result = grade(r"\boxed{x^2}", "y^2", timeout_s=0.2)
    assert result.timed_out and not result.correct and result.extracted == "x^2"
    assert grade(r"\boxed{4}", "4", timeout_s=0.2).correct  # the cheap paths need no SymPy


def test_equations_in_different_unknowns_never_reach_the_solver(monkeypatch):
    """Math-Verify's solve-and-compare is skipped where the unknowns differ (it can take SymPy seconds)."""
    import math_verify

    calls = []
    real = math_verify.verify
    monkeypatch.setattr(math_verify, "verify", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert not answers_match("y=c_{1} x+c_{2} x^{1 / 3}", "x=-\\frac{1}{4}")
    assert not answers_match("20 \\cos(\\pi/4) \\cdot 300 = 4242.6", "y=c_{1}+c_{2} x")
    assert calls == []
    assert answers_match("2x-y+1=0", "y=2x+1") and len(calls) == 1  # the same unknowns: compared
    # an equation whose side is no expression (a set of solutions) goes to Math-Verify as it is
    set_eq = "x=\\frac{1}{6} \\pi+\\pi k, \\frac{5}{6} \\pi+\\pi k"
    assert grade(f"$${set_eq}$$", "3").error is None and grade("\\boxed{(-\\infty,-5)}", set_eq).error is None


_MATRIX_BODY_RE = re.compile(
    r"(\\begin\{(?:pmatrix|bmatrix|array)\}(?:\{[lcr]*\})?)(.*?)(\\end\{(?:pmatrix|bmatrix|array)\})", re.S
)
_ONE_MATRIX_RE = re.compile(
    r"\$?\s*(?:[A-Z](?:\^\{?-1\}?)?\s*=\s*)?(?:\\left[\[(])?\s*\\begin.*\\end\{\w+\}\s*(?:\\right[\])])?\s*\$?",
    re.S,
)


def _rows(body: str) -> list[str]:
    return [r.strip() for r in body.split("\\\\") if r.strip()]


def _reverse_rows(gold: str) -> str:
    """``gold`` with the rows of its matrices reversed, each written as a pmatrix."""
    flip = _MATRIX_BODY_RE.sub(
        lambda m: r"\begin{pmatrix}" + r" \\ ".join(reversed(_rows(m.group(2)))) + r"\end{pmatrix}", gold
    )
    return re.sub(r"\\left\[|\\right\]", "", flip).strip("$")


@pytest.mark.parametrize("name", ["math", "college_math"])
def test_benchmark_matrices_keep_their_rows(name, data_dir):
    """Every gold holding a matrix rejects itself with the rows reversed; a gold that is one numeric
    matrix accepts itself rewritten (pmatrix, a/b as \\frac)."""
    rejected = accepted = 0
    for p in load(name, data_dir):
        bodies = [m.group(2) for m in _MATRIX_BODY_RE.finditer(p.answer)]
        unnamed = re.sub(r"^\$*\s*[A-Za-z](?:\^\{?-1\}?)?\s*=", "", p.answer)
        if (
            not any(len(set(_rows(b))) >= 2 for b in bodies)
            or "\\begin{array}{rll}" in p.answer
            or "=" in unnamed
        ):
            continue  # no matrix with two different rows, a piecewise function, or an equation
        reversed_gold = _reverse_rows(p.answer)
        assert not is_correct(f"\\boxed{{{reversed_gold}}}", p.answer), p.answer
        rejected += 1
        rows = _rows(bodies[0])
        if len(bodies) == 1 and _ONE_MATRIX_RE.fullmatch(p.answer) and not re.search(r"[a-z]{2}", bodies[0]):
            body = r" \\ ".join(re.sub(r"(-?\d+)/(\d+)", r"\\frac{\1}{\2}", r) for r in rows)
            assert is_correct(f"\\boxed{{\\begin{{pmatrix}} {body} \\end{{pmatrix}}}}", p.answer), p.answer
            accepted += 1
    assert rejected >= (7 if name == "math" else 50) and accepted >= 5, (rejected, accepted)


QWEN_DIFFERS = [  # (gold, response, sedsft's verdict, Qwen2.5-Math's extraction's verdict)
    ("5", "<think>So \\boxed{5}.</think>\nI could not determine the answer.", False, True),
    ("3", "The total is\n2(1 + 2) * 3", False, True),
    ("18", "The total is\n2(1 + 2) * 3", True, False),
    ("[-2, 7]", "So the solution set is\n\n[-2, 7]", True, False),
]


@pytest.mark.parametrize("gold,response,ours,qwen", QWEN_DIFFERS)
def test_protocol_qwen_restores_qwen_extraction(gold, response, ours, qwen):
    assert grade(response, gold).correct is ours
    assert grade(response, gold, protocol="qwen").correct is qwen


def test_unknown_protocol_is_refused():
    from sedsft.errors import UserError

    with pytest.raises(UserError, match="grading protocol 'minerva'"):
        grade(r"\boxed{1}", "1", protocol="minerva")
