"""is_correct / extract_answer as (gold, response, expected) tables, grouped by phenomenon."""

from __future__ import annotations

import pytest

from sedsft.eval.grading import answers_match, extract_answer, is_correct

# Each table: (gold, response, expected). Responses are as a model would write them.
TABLES: dict[str, list[tuple[str, str, bool]]] = {
    "plain_numbers": [
        ("3", r"So the answer is $\boxed{3}$.", True),
        ("-1", r"\boxed{-1}", True),
        ("27", r"\boxed{27.0}", True),
        ("0.8", r"\boxed{\frac{4}{5}}", True),
        ("\\frac{1}{2}", r"\boxed{0.5}", True),
        ("\\frac{1}{2}", r"\boxed{\dfrac12}", True),
        ("3", r"\boxed{4}", False),
        ("3.14", r"\boxed{3.15}", False),
    ],
    "zero_padded_aime": [
        ("073", r"\boxed{73}", True),
        ("025", r"\boxed{025}", True),
        ("73", r"\boxed{073}", True),
        ("073", r"\boxed{730}", False),
    ],
    "thousands_separators": [
        ("3159", r"\boxed{3,159}", True),
        ("1000000", r"\boxed{1{,}000{,}000}", True),
        ("3159", r"\boxed{3159.5}", False),
    ],
    "units_percent_degrees": [
        ("10", r"\boxed{10\%}", True),
        ("10\\%", r"\boxed{10}", True),
        ("90", r"\boxed{90^\circ}", True),
        ("90", r"\boxed{90^{\circ}}", True),
        ("5", r"\boxed{5 \text{ cm}}", True),
        ("5", r"\boxed{5\text{ cm}^2}", True),
        ("18", r"\boxed{\$18}", True),
        ("18", "She makes 18 dollars.\n#### 18 dollars", True),
        ("6", r"\boxed{60^\circ}", False),
    ],
    "latex_expressions": [
        ("2\\sqrt{2}", r"\boxed{\sqrt{8}}", True),
        ("x^2+2x+1", r"\boxed{(x+1)^2}", True),
        ("\\frac{\\sqrt{17}}{17}", r"\boxed{\frac{1}{\sqrt{17}}}", True),
        ("$-1-\\sqrt{3}$", r"\boxed{-1 - \sqrt{3}}", True),
        ("10-4 n", r"\boxed{-4n+10}", True),
        ("\\frac{\\pi}{3}", r"\boxed{60}", False),
        ("2\\sqrt{2}", r"\boxed{2\sqrt{3}}", False),
    ],
    "intervals": [
        ("(-\\infty,-3)", r"\boxed{(-\infty, -3)}", True),
        ("[1,2)", r"\boxed{[1, 2)}", True),
        ("(-1,1]", r"\boxed{(-1,1]}", True),
        ("(-1,1]", r"\boxed{(-1,1)}", False),
    ],
    "sets_and_tuples": [
        ("\\{2,3,5\\}", r"\boxed{\{5,3,2\}}", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", r"\boxed{(3, \pi/2)}", True),
        ("(45,2),(-10,-9)", r"\boxed{(45,2),(-10,-9)}", True),
        ("(1,2)", r"\boxed{(2,1)}", False),
    ],
    "equations_and_assignments": [
        ("5", r"\boxed{x=5}", True),
        ("x=5", r"\boxed{5}", True),
        ("y=2x+1", r"\boxed{y = 1 + 2x}", True),
        ("5", r"\boxed{x=6}", False),
    ],
    "text_answers": [
        (
            "\\text{a necessary but not a sufficient condition}",
            r"\boxed{\text{a necessary but not a sufficient condition}}",
            True,
        ),
        ("A", r"The answer is \boxed{A}", True),
        ("A", r"The answer is \boxed{B}", False),
    ],
    "extraction_formats": [
        ("18", "Janet makes 9 * 2 = 18 dollars.\n#### 18", True),
        ("42", "Final Answer: The final answer is $42$. I hope it is correct.", True),
        ("42", "The answer is 42.", True),
        ("42", "First 40, then adding 2 we get 42", True),  # last number, gold numeric
        ("42", r"\boxed 42", True),
        ("\\frac{1}{2}", r"The final answer is $\frac{1}{2}$.", True),
    ],
    "false_positive_traps": [
        (
            "5",
            r"We found 5 earlier, but the answer is \boxed{6}.",
            False,
        ),  # a different number inside the box
        ("12", r"Step 1: 12 apples. Step 2: 12 + 3 = 15. \boxed{15}", False),  # only in an intermediate step
        ("12", "Step 1: 12 apples. Step 2: 12 + 3 = 15.", False),  # unboxed: the last number is 15
        ("7", r"So x = 7 and the answer is \boxed{}", False),  # empty box: no answer given
        ("3", r"\boxed{3} ... wait, that is wrong: \boxed{5}", False),  # two boxes: the last one counts
        ("5", r"\boxed{3} ... wait, that is wrong: \boxed{5}", True),
        ("x^2", r"\boxed{x^3}", False),
        ("1", "", False),
        ("1", r"\boxed{1", False),  # a box that never closes
        ("2", r"\boxed{\frac{1}{2}}", False),
    ],
}


@pytest.mark.parametrize(
    "gold,response,expected",
    [pytest.param(*row, id=f"{group}-{i}") for group, rows in TABLES.items() for i, row in enumerate(rows)],
)
def test_is_correct(gold, response, expected):
    assert is_correct(response, gold) is expected


EXTRACTIONS = [
    (r"so $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
    (r"\boxed{a} and then \boxed{b}", "b"),
    (r"\boxed{b} then \boxed{}", "b"),
    (r"\fbox{7}", "7"),
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
    ("x\n#### 1,234", "1,234"),
    ("The final answer is $x^2$. I hope it is correct.", "x^2"),
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


def test_answers_match_is_symmetric_on_plain_numbers():
    assert answers_match("0.5", "\\frac{1}{2}") and answers_match("\\frac{1}{2}", "0.5")


def test_code_in_a_response_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"__import__('pathlib').Path({str(marker)!r}).write_text('x')"
    for response in (rf"\boxed{{{payload}}}", f"The answer is {payload}", payload):
        assert is_correct(response, "12345") is False
    assert not marker.exists()


def test_escaped_braces_inside_a_box_do_not_end_it():
    gold = r"$C(p)=\left\{\begin{array}{rll}6 p+1.5 & \text { if } & 1 \leq p \leq 5 \\ 5.5 p & \text { if } & p \geq 6\end{array}\right.$"
    assert is_correct(f"The answer is \\boxed{{{gold}}}.", gold)
    assert extract_answer(r"\boxed{\{1\}} and \boxed{\{2, 3\}}") == r"\{2, 3\}"
