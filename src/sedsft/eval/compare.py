"""Are two answers equal? ``answers_match(pred, gold)``, cheapest test first, symmetric in its sides.

Equal normalised strings; a number and one unit on both sides (``0.6400 N``, ``0.64N``) by the
numbers; plain numbers (exact fractions, decimals to 1e-6 relative, ``x%`` = ``x`` = ``x/100`` only
where a percent sign is written); ``a \\approx b`` (and college_math's ``relation:set``) matches what
either form matches; an assignment (``x = 5``, ``f(x) = ...``, ``|AB| = 1``) against a value compares its right side, an
equation that is no assignment never equals a value, two assignments of constants to different
names differ (``x = 5`` vs ``y = 5``), a function and a plain name for its value of the same
arguments (``f(x) = 2x + 3``, ``y = 2x + 3``) compare their right sides, a derivative is not its
function (``f'(x)`` vs ``f(x)``), two assignments to the same name compare their right sides
(``y = f`` vs ``y = g``: Math-Verify's own equation test calls two equations SymPy cannot solve
equal, vector ones included), other pairs of equations are compared as equations (never
equal when their unknowns differ); an unbracketed list (``1, 2 and 3``) as an unordered multiset,
item by item (a number listed twice is not the list without it); anything else by Math-Verify's
LaTeX ``parse`` + ``verify`` (expressions, intervals, sets, tuples, matrices), where constants in
``i`` alone are compared as complex values and inequalities in one unknown against an interval as
the set of values they allow.

Only Math-Verify's LaTeX parser (ANTLR) sees model output, never its ``ExprExtractionConfig``, which
goes through SymPy's ``parse_expr`` (Python ``eval``). An answer over ``MAX_ANSWER_CHARS`` or nested
deeper than ``MAX_BRACE_DEPTH`` is compared as a string only; SymPy work runs within the grade's
time budget (``sedsft.eval.time_limit``).
"""

from __future__ import annotations

import logging
import re
from fractions import Fraction
from functools import lru_cache

from sedsft.eval.normalize import (
    DECIMAL_COMMA_RE,
    WORDS_RE,
    close,
    key,
    normalize_answer,
    number_and_unit,
    numbers_equal,
    plain_number,
)
from sedsft.eval.time_limit import within_budget

# Math-Verify logs a warning per unparsable answer (and that its own timeouts are off: ours are on).
logging.getLogger("math_verify").setLevel(logging.ERROR)

MAX_ANSWER_CHARS = 1_000  # longer answers are compared as strings only (no SymPy)
MAX_BRACE_DEPTH = 12  # deeper nesting is compared as strings only
MAX_LIST_ITEMS = 24  # longer unbracketed lists go to Math-Verify whole


# ---- structure: top-level splits, equations, lists -----------------------------------------------

_OPEN, _CLOSE = "([{", ")]}"


def _split_top(s: str, seps: str) -> list[str]:
    """``s`` split at the characters ``seps`` that are outside all brackets and braces."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] in "{}":
            depth += 1 if s[i + 1] == "{" else -1
            i += 2
            continue
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth = max(0, depth - 1)
        elif depth == 0 and c in seps:
            parts.append(s[start:i])
            start = i + 1
        i += 1
    parts.append(s[start:])
    return [p.strip() for p in parts]


_RELATION_SIGNS_RE = re.compile(r"<=|>=|!=|==|=>|<=>")
_CONNECTIVE_RE = re.compile(r"\\text\s*\{\s*(?:and|or)\s*\}|(?<![A-Za-z\\])(?:and|or)(?![A-Za-z])")
_TARGET_DECORATION_RE = re.compile(r"_\{[^{}]*\}|_\w|\^\{?(?:-1|T|\\top|\\prime|\*)\}?|'")
_LETTER_RE = re.compile(r"[A-Za-z]")
_ALNUM_RE = re.compile(r"[A-Za-z0-9]")
_COMMAND_RE = re.compile(r"\\[A-Za-z]+")
_NOT_TARGET_RE = re.compile(r"[\d+\-*^/<>!]|\\")
_TARGET_COMMANDS_RE = re.compile(
    r"\\(?:text|mathrm|mathbf|operatorname|overline|overrightarrow|angle|vec|hat|bar|frac|mid|vert|lvert|rvert)\b"
)


def _equation(s: str) -> tuple[str, str] | None:
    """(first left side, last right side) of an equation or a chain ``a = b = c``; None if no ``=``."""
    if "=" not in s or _RELATION_SIGNS_RE.search(s) or len(list_items(s)) > 1:
        return None  # no equation, an inequality, or a list (of equations)
    parts = _split_top(s, "=")
    if len(parts) < 2 or not parts[0] or not parts[-1]:
        return None
    return parts[0], parts[-1]


def _is_target(lhs: str) -> bool:
    """Whether ``lhs`` names what is assigned (x, a_1, f(x), |AB|, B^{-1}), not an expression (2x+z)."""
    t = _TARGET_DECORATION_RE.sub("", lhs)  # a_1, B^{-1}, A^T, f'(x)
    t = _TARGET_COMMANDS_RE.sub("", t)
    return len(lhs) <= 40 and _LETTER_RE.search(t) is not None and not _NOT_TARGET_RE.search(t)


def _names_in(side: str, target: str) -> bool:
    """Whether ``side`` mentions a letter that names ``target`` (y in y = 2y + 1; f, not x, in f(x))."""
    name = _COMMAND_RE.sub("", re.sub(r"\([^()]*\)", "", target))
    letters = set(_LETTER_RE.findall(name))
    return bool(letters & set(_LETTER_RE.findall(_COMMAND_RE.sub("", side))))


_FUNCTION_NAME_RE = re.compile(r"([A-Za-z])\s*\(\s*([A-Za-z](?:\s*,\s*[A-Za-z])*)\s*\)")


def _same_role(pl: str, pr: str, gl: str, gr: str) -> bool:
    """Whether two assignments name the same thing differently: a function of the right side's
    variables (``f(x) = 2x + 3``) and a plain name for its value (``y = 2x + 3``), or two functions of
    the same arguments. Never two plain names (``x = 2t`` and ``y = 2t`` are two coordinates)."""
    calls = [_FUNCTION_NAME_RE.fullmatch(x.strip()) for x in (pl, gl)]
    if not any(calls):
        return False
    args = {frozenset(_LETTER_RE.findall(c.group(2))) for c in calls if c}
    if len(args) != 1:
        return False
    (arg_set,) = args
    names = {c.group(1) if c else x.strip() for c, x in zip(calls, (pl, gl))}
    if not all(len(n) == 1 and n not in arg_set for n in names):
        return False  # a plain name that is no single letter (x_1, y'), or one of the arguments
    for side in (pr, gr):
        letters = set(_LETTER_RE.findall(_COMMAND_RE.sub("", side)))
        if not letters or not letters <= arg_set:
            return False  # a constant, or other unknowns on the right
    return True


def _is_derivative(lhs: str) -> bool:
    """Whether an assigned name is a derivative: ``f'(x)``, ``y''``, ``f^{\\prime}(x)``."""
    return "'" in lhs or "\\prime" in lhs


def _is_constant(s: str) -> bool:
    """No variables: only digits, operators and LaTeX commands (\\frac, \\sqrt, \\pi)."""
    return not _LETTER_RE.search(_COMMAND_RE.sub("", s))


def list_items(s: str) -> list[str]:
    """The items of an unbracketed list "1, 2 and 3" (one item when ``s`` is not a list)."""
    return [p for p in _split_top(_CONNECTIVE_RE.sub(",", s), ",;") if p]


def _same_items(pred: list[str], gold: list[str], percent: bool) -> bool:
    """Unordered: every gold item matches its own pred item."""
    left = list(pred)
    for g in gold:
        hit = next((i for i, p in enumerate(left) if _match(p, g, percent)), None)
        if hit is None:
            return False
        left.pop(hit)
    return True


_PMATRIX_RE = re.compile(r"\\begin\{pmatrix\}(.*)\\end\{pmatrix\}", re.DOTALL)


def _vector(s: str) -> list[str] | None:
    """The entries of a one-row or one-column pmatrix, in order; None for anything else."""
    m = _PMATRIX_RE.fullmatch(s.strip())
    if m is None or "\\begin" in m.group(1):
        return None
    rows = [r.strip() for r in m.group(1).split("\\\\") if r.strip()]
    cells = [[c.strip() for c in r.split("&")] for r in rows]
    if len(cells) == 1:
        return cells[0]
    return [c[0] for c in cells] if all(len(c) == 1 for c in cells) else None


def _tuple(s: str) -> list[str] | None:
    """The items of a parenthesised tuple "(a, b, ...)" of two or more; None for anything else."""
    s = s.strip()
    if not (s.startswith("(") and s.endswith(")")) or len(_split_top(s, ",")) > 1:
        return None
    items = _split_top(s[1:-1], ",")
    return items if len(items) >= 2 and all(items) else None


_RELATION_RE = re.compile(r"<|>|\\le\b|\\ge\b")


def _alternatives(s: str) -> list[str]:
    """The forms of an answer stated twice: ``a \\approx b``, or a relation and its set joined by
    a colon (``-1<x \\le 1:(-1,1]``, as college_math writes them); [] for any other answer."""
    if "\\approx" in s:
        return [x.strip() for x in s.split("\\approx") if x.strip()]
    if ":" in s and _RELATION_RE.search(s):
        parts = _split_top(s, ":")
        if len(parts) == 2 and all(parts):
            relation, values = parts
            if _RELATION_RE.search(relation) and (values[0] in "([" or "\\cup" in values):
                return parts
    return []


def _too_complex(s: str) -> bool:
    if len(s) > MAX_ANSWER_CHARS:
        return True
    depth = deepest = 0
    for c in s:
        if c == "{":
            depth += 1
            deepest = max(deepest, depth)
        elif c == "}":
            depth -= 1
    return deepest > MAX_BRACE_DEPTH or depth != 0


# ---- Math-Verify ---------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _latex_only_config():
    from math_verify import LatexExtractionConfig

    # boxed first; never ExprExtractionConfig (it evals through SymPy's parse_expr).
    return [LatexExtractionConfig(boxed_match_priority=0)]


@lru_cache(maxsize=8192)
def parse_answer(answer: str):
    """Math-Verify's parse of one answer (cached), LaTeX extraction only."""
    from math_verify import parse

    # No Math-Verify timeouts: its signal.alarm would cancel the one _time_limit set for the grade.
    return parse("\\boxed{" + answer + "}", extraction_config=_latex_only_config(), parsing_timeout=None)


_SENTENCE_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}\s+[A-Za-z]{2,}\s+[A-Za-z]{2,}\b")


def _math_verify(gold: str, pred: str) -> bool:
    from math_verify import verify

    if _too_complex(gold) or _too_complex(pred):
        return False
    if _SENTENCE_RE.search(gold) or _SENTENCE_RE.search(pred):
        return False  # prose: Math-Verify would compare stray fragments of it
    with within_budget():
        g, p = parse_answer(gold), parse_answer(pred)
        if not (g and p):
            return False
        gu, pu = _unknowns(g[0]), _unknowns(p[0])
        if gu is not None and pu is not None and gu != pu:
            return False
        if "i" in gold or "i" in pred:
            same = _complex_equal(g[0], p[0])
            if same is not None:
                return same
        if verify(g, p, timeout_seconds=None):
            return True
        gs, ps = (
            _relation_as_set(g[0], p[0], _ONLY_OR_RE.search(gold)),
            _relation_as_set(p[0], g[0], _ONLY_OR_RE.search(pred)),
        )
        if gs is None and ps is None:
            return False
        # "-2 \le x \le 7" against "[-2, 7]": the values the relation allows, as a set
        return bool(
            verify([gs] if gs is not None else g, [ps] if ps is not None else p, timeout_seconds=None)
        )


def _complex_equal(a, b) -> bool | None:
    """Two complex numbers written with ``i`` (``i(2-i)`` and ``1+2i``): their difference, with ``i``
    as the imaginary unit, is zero (to 1e-6 relative where a decimal is written); None unless both
    sides are constants in ``i`` alone."""
    from sympy import Expr, Float, I, nsimplify, simplify

    if not (isinstance(a, Expr) and isinstance(b, Expr)):
        return None
    # the parser's i is a symbol, and not always with one set of assumptions: every symbol named i
    unknowns = a.free_symbols | b.free_symbols
    if not unknowns or {x.name for x in unknowns} != {"i"}:
        return None
    a, b = a.subs({x: I for x in unknowns}), b.subs({x: I for x in unknowns})
    if a.has(Float) or b.has(Float):
        av, bv = complex(a.evalf()), complex(b.evalf())
        return abs(av - bv) <= max(1e-9, 1e-6 * max(abs(av), abs(bv)))
    return simplify(nsimplify(a - b)) == 0


_ONLY_OR_RE = re.compile(
    r"^(?:(?!\band\b|,).)*\bor\b(?:(?!\band\b|,).)*$", re.DOTALL
)  # "a or b", no "and" or ","


def _relation_as_set(expr, other, either: bool):
    """The set of values ``expr`` allows (an inequality, a chain, inequalities joined by "or", in one
    unknown) when ``other`` is a set (an interval, a union); else None. ``either``: the relations
    were joined by "or" only (the parser returns relations joined by "and" or commas the same way)."""
    from sympy import And, FiniteSet, Or, Set
    from sympy.core.function import AppliedUndef
    from sympy.core.relational import Relational

    if not isinstance(other, Set) or isinstance(other, FiniteSet):  # an interval or a union, not {1, 2}
        return None
    if isinstance(expr, FiniteSet) and either and expr and all(isinstance(x, Relational) for x in expr):
        expr = Or(*expr)  # "x < -2 or x > 7" is parsed as the set of its two relations
    if not isinstance(expr, (Relational, And, Or)) or len(expr.free_symbols) != 1 or expr.atoms(AppliedUndef):
        return None  # not in one unknown, or about a function's values (0 < f(x) < 1)
    try:
        return expr.as_set()
    except (NotImplementedError, TypeError, ValueError):  # SymPy cannot solve it: no set
        return None


def _unknowns(expr) -> frozenset | None:
    """The unknowns of a parsed equation (SymPy's free symbols of lhs - rhs: bound variables are not
    free, terms that cancel are gone); None for anything else, which Math-Verify compares as it does.

    Equations in different unknowns are different equations. Math-Verify would still try to solve
    both for their symbols and compare the solutions, which can keep SymPy busy for many seconds
    (``y = c_1 x + c_2 x^{1/3}`` against ``x = -1/4``: 14 s) to say no.
    """
    from sympy import Eq, Expr

    if not (isinstance(expr, Eq) and isinstance(expr.lhs, Expr) and isinstance(expr.rhs, Expr)):
        return None  # not an equation of two expressions (``x = {1, 2}``, a matrix equation)
    try:
        return frozenset((expr.lhs - expr.rhs).free_symbols)
    except Exception:  # SymPy refuses the difference (a matrix symbol and a scalar): no shortcut
        return None


# ---- comparison ----------------------------------------------------------------------------------


def _match(p: str, g: str, percent: bool) -> bool:
    """Whether normalised answers ``p`` and ``g`` are equal (module doc, step 4)."""
    if not p or not g:
        return False
    if key(p) == key(g):
        return True
    pn, gn = plain_number(p), plain_number(g)
    if pn is not None and gn is not None:
        return numbers_equal(p, g, pn, gn, percent)
    for side, other, side_is_pred in ((p, g, True), (g, p, False)):
        parts = _alternatives(side)
        if parts:  # "1/3 \approx 0.33", "-1 < x \le 1 : (-1, 1]": what either form matches
            return any(
                _match(x, other, percent) if side_is_pred else _match(other, x, percent) for x in parts
            )
    pe, ge = _equation(p), _equation(g)
    if pe and ge:
        (pl, pr), (gl, gr) = pe, ge
        if _is_target(pl) and _is_target(gl):  # two assignments
            if key(pl) == key(gl) and not (_names_in(pr, pl) or _names_in(gr, gl)):
                return _match(pr, gr, percent)  # y = f vs y = g: f = g (also where f is a vector)
            if _same_role(pl, pr, gl, gr):
                return _match(pr, gr, percent)  # y = 2x + 3 vs f(x) = 2x + 3
            if _is_derivative(pl) != _is_derivative(gl):
                return False  # f'(x) = 2x is not f(x) = 2x (Math-Verify's parser drops the prime)
            if _is_constant(pr) and _is_constant(gr):
                return False  # x = 5 vs y = 5 differ
        return _math_verify(g, p)
    if pe or ge:  # one equation, one value
        (lhs, rhs), value = (pe, g) if pe else (ge, p)
        if not (_is_target(lhs) or (_is_constant(lhs) and _is_constant(rhs))):
            return False  # "2x + z = 1" is no value
        return _match(rhs, value, percent) if pe else _match(value, rhs, percent)
    pv, gv = _vector(p), _vector(g)
    if (pv is None) != (gv is None) and (pv or _tuple(p)) and (gv or _tuple(g)):  # a vector as a tuple
        pv, gv = pv or _tuple(p), gv or _tuple(g)
        return len(pv) == len(gv) and all(_match(a, b, percent) for a, b in zip(pv, gv))
    pi, gi = list_items(p), list_items(g)
    if 1 < len(gi) <= MAX_LIST_ITEMS and len(pi) == len(gi):
        return _same_items(pi, gi, percent)
    if len(pi) != len(gi) and max(len(pi), len(gi)) <= MAX_LIST_ITEMS:
        longer, shorter = (pi, gi) if len(pi) > len(gi) else (gi, pi)
        if len({key(x) for x in longer}) == len(shorter) and not any(_tuple(x) for x in longer):
            # "1, 1, 2" is not "1, 2": a number listed twice is a double root. (A solution tuple
            # listed twice is one solution written twice, as Math-Verify's tables read it.)
            return False
    if (pn is not None and WORDS_RE.fullmatch(g)) or (gn is not None and WORDS_RE.fullmatch(p)):
        return False  # a number is never a word
    return _math_verify(g, p)


def answers_match(pred: str, gold: str) -> bool:
    """Whether the extracted answer ``pred`` equals ``gold`` (both answer strings, not responses)."""
    both = pred + gold
    percent = "%" in both or ("p" in both and ("percent" in both or "pct" in both))
    pu, gu = number_and_unit(pred), number_and_unit(gold)
    if pu and gu and pu[1] == gu[1]:  # "0.6400 N" and "0.64N": one unit on both sides, the numbers compared
        pn, gn = plain_number(pu[0]), plain_number(gu[0])
        return numbers_equal(pu[0], gu[0], pn, gn, percent)
    p, g = normalize_answer(pred), normalize_answer(gold)
    for a, b in ((p, g), (g, p)):  # "1,22" written with a decimal comma against "1.22"
        if DECIMAL_COMMA_RE.fullmatch(a) and "." in b and plain_number(b) is not None:
            return close(Fraction(a.replace(",", ".")), plain_number(b), False)
    return _match(p, g, percent)
