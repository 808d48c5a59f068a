"""A held-out check of the grader: (source, gold, response, expected) rows it was not tuned on.

Written for issue 20 before the grader was changed against them, and kept apart from the tuning
tables (grading_tables.py). Each row is a clear case, one any careful human grader decides the same
way; ``expected`` is the mathematics. Sources, each row in our own words:

- ``bench:<set>``: a real gold of the benchmark files in ../shared/data, with an equivalent answer or a
  near miss written the way models write them;
- ``prm800k``: PRM800K's answer layout (``# Answer`` on its own line, the answer below) and the
  normalisations its grader documents (units, mixed numbers, "million");
- ``gsm8k-raw``: GSM8K's raw answer field (a worked solution ending ``#### N``) as the gold;
- ``qwen-grader``: pairs of the kind Qwen2.5-Math's grader lists in its own self-check;
- ``hendrycks``: the string forms MATH's ``is_equiv`` rewrites (``\\dfrac``, ``0.5`` vs ``\\frac12``,
  ``\\text{ }`` units, ``\\left``/``\\right``);
- ``think``: responses of reasoning models (``<think>...</think>`` then a summary);
- ``qwen-style``: answers written as Qwen2.5-Math's models write them.

``HOLDOUT`` was measured first (95.2%), then six of its misses were fixed by general rules;
``HOLDOUT_FRESH`` was written after that and measured once (96.7%): its misses are kept as they are.
"""

from __future__ import annotations

HOLDOUT: list[tuple[str, str, str, bool]] = [
    # ---- real benchmark golds, equivalent forms -----------------------------------------------
    ("bench:math500", "6 - 5i", r"Multiplying out, we get $\boxed{-5i + 6}$.", True),
    ("bench:math500", "6+9i", r"So the product is $\boxed{3(2+3i)}$.", True),
    ("bench:math500", "-2 + 7i", r"\boxed{i(7+2i)}", True),
    ("bench:math500", "1+2i", r"The result is $\boxed{\frac{2+4i}{2}}$.", True),
    ("bench:math500", "1 - 12i", r"\boxed{1+12i}", False),
    ("bench:math500", "6 - 5i", r"\boxed{6+5i}", False),
    ("bench:gaokao2023en", "$1-i$", r"Hence $z = \boxed{\frac{2}{1+i}}$.", True),
    ("bench:gaokao2023en", "$-i$", r"So $z=\boxed{\frac{1}{i}}$.", True),
    ("bench:gaokao2023en", "$4+i$", r"\boxed{4-i}", False),
    ("bench:college_math", "$\\frac{48 i-56}{85}$", r"\boxed{-\frac{56}{85}+\frac{48}{85}i}", True),
    ("bench:college_math", "$27+38 i$", r"\boxed{27 + 38i}", True),
    ("bench:college_math", "$-3+11 i$", r"\boxed{-3-11i}", False),
    ("bench:math500", "(3,4]", r"Thus $3 < x \le 4$, which is $\boxed{3 < x \leq 4}$.", True),
    ("bench:math500", "(3,4]", r"\boxed{3 \le x \le 4}", False),
    ("bench:math500", "(2,\\infty)", r"\boxed{x > 2}", True),
    ("bench:math500", "(2,\\infty)", r"\boxed{x \geq 2}", False),
    ("bench:math500", "(-2,1)", r"The inequality holds for $\boxed{-2<x<1}$.", True),
    ("bench:math500", "(-2,1)", r"\boxed{-1<x<2}", False),
    ("bench:gaokao2023en", "$[2,+\\infty)$", r"\boxed{x\ge 2}", True),
    ("bench:gaokao2023en", "$(-\\infty,-3)$", r"\boxed{x<-3}", True),
    ("bench:gaokao2023en", "$(-\\infty,-3)$", r"\boxed{x\le -3}", False),
    ("bench:math500", "\\left(\\frac{3}{5},\\frac{8}{3}\\right]", r"\boxed{\frac35 < x \le \frac83}", True),
    (
        "bench:math500",
        "\\left(\\frac{3}{5},\\frac{8}{3}\\right]",
        r"\boxed{\frac35 \le x \le \frac83}",
        False,
    ),
    ("bench:college_math", "$-1<x \\leqslant 1:(-1,1]$", r"\boxed{(-1, 1]}", True),
    ("bench:college_math", "$-2 \\leqslant n \\leqslant 4:[-2,4]$", r"\boxed{-2 \le n \le 4}", True),
    ("bench:college_math", "$-6 \\leqslant x \\leqslant-2:[-6,-2]$", r"\boxed{[-6,-2)}", False),
    ("bench:math500", "y = 2x + 3", r"The line is $\boxed{f(x) = 2x+3}$.", True),
    ("bench:math500", "y = -2x", r"\boxed{g(x) = -2x}", True),
    ("bench:math500", "y = 2x + 3", r"\boxed{f(x) = 3x + 2}", False),
    ("bench:math500", "y = -2x", r"\boxed{x = -2y}", False),
    ("bench:math500", "\\text{even}", r"The function is \boxed{\text{even}}.", True),
    ("bench:math500", "\\text{even}", "The function is even.\n\nThe answer is even", True),
    ("bench:math500", "\\text{even}", "The answer is odd.", False),
    ("bench:math500", "\\text{ellipse}", r"So the curve is an \boxed{\text{Ellipse}}.", True),
    ("bench:math500", "\\text{ellipse}", r"\boxed{\text{hyperbola}}", False),
    ("bench:math500", "5.4 \\text{ cents}", r"\boxed{5.40 \text{ cents}}", True),
    ("bench:math500", "5.4 \\text{ cents}", r"\boxed{5.4}", True),
    ("bench:math500", "5.4 \\text{ cents}", r"\boxed{54 \text{ cents}}", False),
    ("bench:gaokao2023en", "$\\{x|-2\\leq x < 1\\}$", r"\boxed{[-2, 1)}", True),
    ("bench:gaokao2023en", "$\\{x|-2\\leq x < 1\\}$", r"\boxed{[-2, 1]}", False),
    ("bench:math500", "\\frac{270}7\\text{ degrees}", r"\boxed{\frac{270}{7}^\circ}", True),
    # ---- bare final answers on the last line ---------------------------------------------------
    ("bench:math500", "(-2,1)", "Combining both conditions, the solution set is\n\n(-2, 1)", True),
    ("bench:math500", "(-2,1)", "Combining both conditions, the solution set is\n\n(-2, 1]", False),
    ("bench:math500", "2\\sqrt{2}", "After simplifying the radical we get\n\n2\\sqrt{2}", True),
    ("bench:math500", "2\\sqrt{2}", "After simplifying the radical we get\n\n2\\sqrt{3}", False),
    ("own", "x=-1", "Substituting back confirms it.\nx = -1", True),
    ("own", "x=-1", "Substituting back confirms it.\nx = 1", False),
    ("own", "\\frac{\\sqrt{3}}{2}", "Therefore:\n\\frac{\\sqrt{3}}{2}", True),
    ("own", "\\frac{\\sqrt{3}}{2}", "Therefore:\n\\frac{\\sqrt{2}}{2}", False),
    ("own", "3\\pi", "The area of the region is\n**3\\pi**", True),
    ("own", "[1,5]", "Both endpoints are included, so the range is\n[1, 5].", True),
    ("own", "[1,5]", "Both endpoints are included, so the range is\n(1, 5).", False),
    # ---- answers that contain words -----------------------------------------------------------
    ("own", "\\text{all odd } n", r"The answer is all odd $n$.", True),
    ("own", "\\text{all odd } n", r"The answer is all even $n$.", False),
    ("own", "$f(x)=cx$ for some constant $c$", r"Final answer: $f(x) = cx$ for some constant $c$.", True),
    ("own", "$f(x)=cx$ for some constant $c$", r"Final answer: $f(x) = cx^2$ for some constant $c$.", False),
    ("own", "$n$ is a power of $2$", r"**Final Answer:** $n$ is a power of $2$", True),
    ("own", "$n$ is a power of $2$", r"**Final Answer:** $n$ is a power of $3$", False),
    ("own", "no solution", r"The answer is: No solution.", True),
    ("own", "no solution", r"The answer is: $x = 2$.", False),
    # ---- GSM8K's raw answer field as the gold --------------------------------------------------
    (
        "gsm8k-raw",
        "She sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18",
        "She has 9 eggs left to sell at $2 each.\nA: 18",
        True,
    ),
    (
        "gsm8k-raw",
        "She sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18",
        "She has 9 eggs left to sell.\nA: 9",
        False,
    ),
    (
        "gsm8k-raw",
        "It takes 2/2=<<2/2=1>>1 bolt of white fiber\nSo the total is 2+1=<<2+1=3>>3\n#### 3",
        r"The robe needs $2 + 1 = 3$ bolts, so the answer is $\boxed{3}$.",
        True,
    ),
    (
        "gsm8k-raw",
        "The total is 80000+50000=<<80000+50000=130000>>130,000\n#### 70000",
        "He made a profit of $70,000.",
        True,
    ),
    (
        "gsm8k-raw",
        "The total is 80000+50000=<<80000+50000=130000>>130,000\n#### 70000",
        "The house cost him $130,000 in all.",
        False,
    ),
    # ---- complex numbers in other forms --------------------------------------------------------
    ("qwen-grader", "\\frac{3}{5}-\\frac{4}{5}i", r"\boxed{\frac{3-4i}{5}}", True),
    ("qwen-grader", "\\frac{3}{5}-\\frac{4}{5}i", r"\boxed{0.6-0.8i}", True),
    ("qwen-grader", "\\frac{3}{5}-\\frac{4}{5}i", r"\boxed{\frac{4-3i}{5}}", False),
    ("own", "-1", r"\boxed{i^2}", True),
    ("own", "2i", r"\boxed{(1+i)^2}", True),
    ("own", "2i", r"\boxed{(1-i)^2}", False),
    ("own", "\\frac{1}{2}i", r"\boxed{0.5i}", True),
    ("own", "\\frac{1}{2}i", r"\boxed{0.5}", False),
    # ---- inequality chains and intervals -------------------------------------------------------
    ("own", "[-\\sqrt{2}, \\sqrt{2}]", r"\boxed{-\sqrt{2} \le x \le \sqrt{2}}", True),
    ("own", "[-\\sqrt{2}, \\sqrt{2}]", r"\boxed{-\sqrt{2} < x \le \sqrt{2}}", False),
    ("own", "(-\\infty, -1) \\cup (3, \\infty)", r"\boxed{x < -1 \text{ or } x > 3}", True),
    ("own", "(-\\infty, -1) \\cup (3, \\infty)", r"\boxed{x \le -1 \text{ or } x > 3}", False),
    ("own", "(-\\infty, -1) \\cup (3, \\infty)", r"\boxed{-1 < x < 3}", False),
    ("own", "x \\in (0, 4)", r"\boxed{0<x<4}", True),
    ("own", "x \\in (0, 4)", r"\boxed{0<x<5}", False),
    ("own", "x \\geq 5", r"\boxed{[5, \infty)}", True),
    ("own", "x \\geq 5", r"\boxed{(5, \infty)}", False),
    # ---- functions and names -------------------------------------------------------------------
    ("own", "f(x) = x^2 - 1", r"\boxed{y = x^2 - 1}", True),
    ("own", "f(x) = x^2 - 1", r"\boxed{y = x^2 + 1}", False),
    ("own", "p(x) = 3x^2 - 2", r"\boxed{q(x) = 3x^2 - 2}", True),
    ("own", "x = 3t", r"\boxed{y = 3t}", False),
    ("own", "a = 4", r"\boxed{b = 4}", False),
    # ---- trailing zeros and units --------------------------------------------------------------
    ("own", "2.5 m/s", r"\boxed{2.50 \text{ m/s}}", True),
    ("own", "2.5 m/s", r"\boxed{2.05 \text{ m/s}}", False),
    ("own", "0.64N", r"The force is $\boxed{0.640\,\mathrm{N}}$.", True),
    ("own", "0.64N", r"\boxed{6.4 N}", False),
    ("prm800k", "12", "Each side is 3 inches, so the perimeter is\n\n# Answer\n\n12 inches", True),
    ("prm800k", "7\\frac{1}{2}", r"\boxed{7.5}", True),
    ("prm800k", "2500000", r"\boxed{2.5 \text{ million}}", True),
    ("prm800k", "2500000", r"\boxed{25 \text{ million}}", False),
    # ---- the last-number fallback and expressions ----------------------------------------------
    ("own", "24", "So the total is 4 * (2 + 4)", True),
    ("own", "6", "So the total is 4 * (2 + 4)", False),
    ("own", "20", "The count is 5 \\times 4", True),
    ("own", "4", "The count is 5 \\times 4", False),
    ("own", "15", "Step 1: 12 apples. Step 2: 12 + 3 = 15.", True),
    # ---- PRM800K's answer header ---------------------------------------------------------------
    ("prm800k", "\\frac{1}{4}", "The probability is one in four.\n\n# Answer\n\n\\frac14", True),
    ("prm800k", "\\frac{1}{4}", "The probability is one in four.\n\n# Answer\n\n\\frac13", False),
    ("prm800k", "(2, -1)", "Solving the system.\n\n# Answer\n\n(2,-1)", True),
    ("prm800k", "(2, -1)", "Solving the system.\n\n# Answer\n\n(-1,2)", False),
    ("prm800k", "x^2+1", "# Answer\n\nx^2 + 1", True),
    # ---- reasoning models ----------------------------------------------------------------------
    ("think", "7", "<think>Try 5: \\boxed{5}? No, recheck.</think>\nThe answer is $\\boxed{7}$.", True),
    ("think", "5", "<think>Try 5: \\boxed{5}? No, recheck.</think>\nThe answer is $\\boxed{7}$.", False),
    ("think", "5", "<think>So \\boxed{5}.</think>\nI am not confident; I cannot settle on an answer.", False),
    ("think", "5", "<think>The sum is 2 + 3 so \\boxed{5}.</think>\n\n**Answer: 5**", True),
    ("think", "12", "<think>First guess \\boxed{10}.</think>\n\nThus the total is $12$.", True),
    # ---- lists ---------------------------------------------------------------------------------
    ("own", "-3, 2", r"The roots are $\boxed{2, -3}$.", True),
    ("own", "-3, 2", r"The roots are $\boxed{2, -3, -3}$.", False),
    ("own", "1, 4", r"\boxed{1, 1, 4}", False),
    ("own", "\\{1, 2\\}", r"\boxed{1, 2}", True),
    # ---- hendrycks' string forms ---------------------------------------------------------------
    ("hendrycks", "\\frac{1}{2}", r"\boxed{\dfrac{1}{2}}", True),
    ("hendrycks", "0.5", r"\boxed{\frac12}", True),
    ("hendrycks", "10", r"\boxed{10\text{ inches}}", True),
    ("hendrycks", "\\left(3, \\frac{\\pi}{2}\\right)", r"\boxed{(3,\frac{\pi}{2})}", True),
    ("hendrycks", "\\frac{\\sqrt{3}}{3}", r"\boxed{\frac{1}{\sqrt{3}}}", True),
    ("hendrycks", "\\frac{\\sqrt{3}}{3}", r"\boxed{\frac{1}{3}}", False),
    # ---- Qwen2.5-Math's self-check kinds -------------------------------------------------------
    ("qwen-grader", "\\frac{x+2}{7}", r"\boxed{\frac{x}{7}+\frac{2}{7}}", True),
    ("qwen-grader", "34x+45y-20z+100=0", r"\boxed{-34x-45y+20z-100=0}", True),
    ("qwen-grader", "\\frac{1+\\sqrt{5}}{2}", r"\boxed{2}", False),
    ("qwen-grader", "(a+5)(b+2)", r"\boxed{(+5)(b+2)}", False),
    ("qwen-grader", "x+2n+1", r"\boxed{x+1}", False),
]

# A second batch, written after the first was measured and the grader changed for its misses;
# measured once (96.7%), and not tuned to. Its two misses stay misses (KNOWN_MISSES).
HOLDOUT_FRESH: list[tuple[str, str, str, bool]] = [
    ("bench:olympiadbench", "1,-1,7,-7", "The possible values are\n\n\\pm 1, \\pm 7", True),
    ("bench:olympiadbench", "1,-1,7,-7", "\\boxed{1, -1, 7, -7, 7}", False),
    ("bench:olympiadbench", "$t(0,4]$", "\\boxed{t \\in (0, 4]}", True),
    ("bench:gaokao2023en", "$35,000$", "The population grows to 35 000 people.", True),
    ("bench:gaokao2023en", "$35,000$", "The population grows to 3 500 people.", False),
    ("bench:gaokao2023en", "$0.17$", "\\boxed{0.170}", True),
    ("bench:gaokao2023en", "$\\frac{\\sqrt{30}}{2}$", "Taking the square root,\n\\sqrt{7.5}", True),
    ("bench:gaokao2023en", "$\\frac{\\sqrt{30}}{2}$", "Taking the square root,\n\\sqrt{30}", False),
    ("bench:gaokao2023en", "D", "So the correct choice is\n\n**D**", False),
    ("bench:college_math", "$49-70 n+25 n^{2}$", "\\boxed{(5n-7)^2}", True),
    ("bench:college_math", "$49-70 n+25 n^{2}$", "\\boxed{(5n+7)^2}", False),
    ("bench:college_math", "$\\ln (10)$", "\\boxed{\\ln 2 + \\ln 5}", True),
    ("bench:college_math", "$7.44 \\times 10^{-4}$", "\\boxed{0.000744}", True),
    ("bench:college_math", "$7.44 \\times 10^{-4}$", "\\boxed{0.00744}", False),
    ("bench:college_math", "10,20", "The two numbers are $\\boxed{20, 10}$.", True),
    ("bench:college_math", "10,20", "\\boxed{10, 10, 20}", False),
    ("bench:math500", "\\frac65", "Dividing, we obtain\n1.2", True),
    ("bench:math500", "\\frac65", "Dividing, we obtain\n1.25", False),
    ("bench:math500", "(6,31,-1)", "# Answer\n\n(6, 31, -1)", True),
    ("bench:math500", "(6,31,-1)", "# Answer\n\n(6, -1, 31)", False),
    (
        "bench:math500",
        "-2",
        "<think>I think it is \\boxed{2}. Wait, sign.</think>\nThe value is $\\boxed{-2}$.",
        True,
    ),
    (
        "bench:math500",
        "2",
        "<think>I think it is \\boxed{2}. Wait, sign.</think>\nThe value is $\\boxed{-2}$.",
        False,
    ),
    ("bench:math500", "\\frac{3\\sqrt{3}}{4}", "\\boxed{\\frac{3}{4}\\sqrt{3}}", True),
    ("bench:math500", "\\frac{3\\sqrt{3}}{4}", "\\boxed{\\frac{3}{4}\\sqrt{2}}", False),
    ("qwen-style", "3-4i", "So $z^2 = \\boxed{(2-i)^2}$.", True),
    ("qwen-style", "3-4i", "\\boxed{(2+i)^2}", False),
    ("qwen-style", "\\frac{1}{2}-\\frac{\\sqrt{3}}{2}i", "\\boxed{\\frac{1 - i\\sqrt{3}}{2}}", True),
    ("qwen-style", "\\frac{1}{2}-\\frac{\\sqrt{3}}{2}i", "\\boxed{\\frac{1 + i\\sqrt{3}}{2}}", False),
    ("own", "(-\\infty, 0] \\cup [4, \\infty)", "\\boxed{x \\le 0 \\text{ or } x \\ge 4}", True),
    ("own", "(-\\infty, 0] \\cup [4, \\infty)", "\\boxed{x < 0 \\text{ or } x \\ge 4}", False),
    ("own", "[-\\frac{1}{2}, 3)", "\\boxed{-\\frac12 \\leq t < 3}", True),
    ("own", "[-\\frac{1}{2}, 3)", "\\boxed{-\\frac12 < t < 3}", False),
    ("own", "(-\\infty, 2)", "So the inequality holds when $\\boxed{x<2}$.", True),
    ("own", "(-\\infty, 2)", "\\boxed{x>2}", False),
    ("own", "g(x)=\\frac{1}{x-1}", "\\boxed{y=\\frac{1}{x-1}}", True),
    ("own", "g(x)=\\frac{1}{x-1}", "\\boxed{y=\\frac{1}{x+1}}", False),
    ("own", "h(t)=-16t^2+64t", "\\boxed{f(t) = 64t - 16t^2}", True),
    ("own", "h(t)=-16t^2+64t", "\\boxed{f(t) = 64t + 16t^2}", False),
    ("own", "9.80 m/s^2", "\\boxed{9.8\\text{ m/s}^2}", True),
    ("own", "9.80 m/s^2", "\\boxed{9.08\\text{ m/s}^2}", False),
    ("own", "1.50 kg", "\\boxed{1.5\\,\\text{kg}}", True),
    ("own", "1.50 kg", "\\boxed{15\\,\\text{kg}}", False),
    ("own", "36", "The area is 6 \\cdot 6", True),
    ("own", "6", "The area is 6 \\cdot 6", False),
    ("own", "10", "Total: (3 + 2) * 2", True),
    ("own", "2", "Total: (3 + 2) * 2", False),
    ("own", "\\text{the empty set}", "The answer is the empty set.", True),
    ("own", "\\text{all real numbers}", "The answer is: all real numbers", True),
    ("own", "\\text{all real numbers}", "The answer is: all positive real numbers", False),
    ("own", "$k$ must be even", "Final Answer: $k$ must be even.", True),
    ("own", "$k$ must be even", "Final Answer: $k$ must be odd.", False),
    (
        "gsm8k-raw",
        "He runs 3*60=<<3*60=180>>180 meters a sprint\nSo 540 in total\n#### 540",
        "He runs 3 sprints of 60 meters 3 times a week.\nA: 540",
        True,
    ),
    (
        "gsm8k-raw",
        "He runs 3*60=<<3*60=180>>180 meters a sprint\nSo 540 in total\n#### 540",
        "Each sprint is 60 meters.\nA: 180",
        False,
    ),
    ("prm800k", "\\frac{5}{3}", "Putting it together.\n\n# Answer\n\n5/3", True),
    ("prm800k", "\\frac{5}{3}", "Putting it together.\n\n# Answer\n\n3/5", False),
    ("prm800k", "3\\frac{1}{3}", "\\boxed{\\frac{10}{3}}", True),
    ("own", "2, 3", "The solutions are $\\boxed{2, 3, 3}$.", False),
    ("own", "2, 3", "The solutions are $\\boxed{3, 2}$.", True),
    ("think", "4", "<think>compute... \\boxed{4}</think>\n\nI am unable to finish this problem.", False),
    ("think", "4", "<think>compute... \\boxed{3}</think>\n\nAfter rechecking, the answer is 4.", True),
]

KNOWN_MISSES = {  # (gold, response): why
    ("$t(0,4]$", r"\boxed{t \in (0, 4]}"): "olympiadbench glues the unknown to its interval",
    ("h(t)=-16t^2+64t", r"\boxed{f(t) = 64t - 16t^2}"): "Math-Verify's parser drops a trailing t (a unit)",
}
