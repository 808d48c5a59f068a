"""Is a free-form math response correct? Extract its final answer, then compare it with the gold.

``grade(response, gold) -> Grade`` (``is_correct`` is its ``.correct``). Grading never raises: an
error or a time-out grades the response incorrect and says why in ``Grade.error``.

1. **Gold**: a gold written like a response (boxes, or math between ``$`` with words around it, as in
   Math-Verify's tables and a few benchmark rows) is reduced to its answer first (``gold_answer``).
2. **Extraction**: :func:`sedsft.eval.extract.extract_answer`, in the paper's protocol order.
3. **Normalisation** (``normalize_answer``): rewrites graders agree on that keep the structure (matrix
   rows ``\\\\``, tuples, equations): delimiters, ``\\left``/``\\right``, ``\\dfrac``, spacing commands,
   thousands separators (``1,000``, ``1{,}000``, ``1,\\!000``, ``1\\,000``), degree and percent signs,
   ``\\$``, ``\\text{}`` around a whole answer, a unit after a number.
4. **Comparison** (``answers_match``), cheapest first and the same whichever side is the gold:
   equal strings; plain numbers (exact fractions, decimals to 1e-6 relative, ``x%`` = ``x`` = ``x/100``
   only where a percent sign is written); ``a \\approx b`` matches what ``a`` or ``b`` matches; an
   assignment (``x = 5``, ``f(x) = ...``, ``|AB| = 1``) against a value compares its right side, an
   equation that is no assignment never equals a value, two assignments of constants to different
   names differ (``x = 5`` vs ``y = 5``), other pairs of equations are compared as equations; an
   unbracketed list (``1, 2 and 3``) as an unordered multiset, item by item; anything else by
   Math-Verify's LaTeX ``parse`` + ``verify`` (expressions, intervals, sets, tuples, matrices).

Safety: model output is untrusted. Only Math-Verify's LaTeX parser (ANTLR) sees it, never its
``ExprExtractionConfig``, which goes through SymPy's ``parse_expr`` (Python ``eval``). Bounds:
extraction is linear in the response; an answer over ``MAX_ANSWER_CHARS`` or nested deeper than
``MAX_BRACE_DEPTH`` is compared as a string only; in a main thread a grade has a ``timeout_s``
budget, enforced by an alarm (``signal.setitimer``) around its SymPy work. A hard limit (a SymPy call stuck in C) needs a
:class:`sedsft.eval.grader_pool.GraderPool`, which grades in processes it can kill.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from sedsft.eval.extract import MATH_SPAN_RE, boxed_answer, extract_answer, is_connector, stated_answer

__all__ = [
    "Grade",
    "GradingTimeout",
    "answer_for_log",
    "answers_match",
    "extract_answer",
    "gold_answer",
    "grade",
    "is_correct",
    "normalize_answer",
    "time_limit",
]

# Math-Verify logs a warning per unparsable answer (and that its own timeouts are off: ours are on).
logging.getLogger("math_verify").setLevel(logging.ERROR)
logger = logging.getLogger(__name__)

GRADE_TIMEOUT_S = 3.0  # default time budget of one grade, main thread only
MAX_ANSWER_CHARS = 1_000  # longer answers are compared as strings only (no SymPy)
MAX_BRACE_DEPTH = 12  # deeper nesting is compared as strings only
MAX_LIST_ITEMS = 24  # longer unbracketed lists go to Math-Verify whole
_NUMBER_CHARS = 400  # longer digit strings are not converted to numbers


@dataclass(frozen=True)
class Grade:
    """One graded response: the answer found in it, the verdict, and why it is False when not by comparison."""

    extracted: str | None
    correct: bool
    timed_out: bool = False
    error: str | None = None  # "timed out after 3 s", "OverflowError: ...": graded incorrect because of it


# ---- time limit ----------------------------------------------------------------------------------


class GradingTimeout(BaseException):  # BaseException: Math-Verify's `except Exception` must not swallow it
    """Raised inside :func:`time_limit` when its time is up."""


_armed = False


def _on_alarm(signum, frame):
    if _armed:
        raise GradingTimeout


_budget = threading.local()  # .deadline: time.monotonic() by which the current grade must end


@contextlib.contextmanager
def _within_budget():
    """Arm the alarm for what is left of the current grade's budget, around slow (SymPy) work only:
    the cheap paths then cost no system calls."""
    deadline = getattr(_budget, "deadline", None)
    if deadline is None:
        yield
        return
    left = deadline - time.monotonic()
    if left <= 0:
        raise GradingTimeout
    with time_limit(left):
        yield


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise :class:`GradingTimeout` after ``seconds`` (main thread, no other SIGALRM user); else no limit."""
    global _armed
    usable = (
        seconds is not None
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None, _on_alarm)
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0
        and not _armed
    )
    if not usable:
        yield
        return
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    _armed = True
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        _armed = False  # from here on a late alarm is ignored
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ---- normalisation -------------------------------------------------------------------------------

_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_WHOLE_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{(.*)\}", re.DOTALL)
_THOUSANDS_MARK_RE = re.compile(
    r"(?<=\d)\s*(?:,\s*\\[!,;]|\{,\})\s*(?=\d{3}(?!\d))|(?<=\d)\\[,!;](?=\d{3}(?!\d))"
)
_SPACING_RE = re.compile(r"(?<!\\)(?:\\q?quad|\\[,;: ])|~")
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right)\s*\.|\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ\b|\\degree\b|°")
_PERCENT_RE = re.compile(r"\\?%|(?<=\d)\s*(?:percent|pct)\b")
_TEXT_WRAP_RE = re.compile(r"^\\(?:text|textbf|textnormal|textrm|mbox|mathrm|mathbf)\s*\{([^{}]*)\}$")
_UNIT_RE = re.compile(
    r"^(.*?[\d}])\s*\\(?:text|textnormal|textrm|mbox|mathrm)\s*\{\s*[a-zA-Z][a-zA-Z .\^/\d]*\}(?:\^\{?\d\}?)?$"
)
_WORD_UNIT_RE = re.compile(r"^([-+]?\d[\d,.]*)\s+[a-zA-Z]+(?:\s+[a-zA-Z]+)*\.?$")
_THOUSANDS_RE = re.compile(r"^[-+]?[1-9]\d{0,2}(?:([, ])\d{3})(?:\1\d{3})*(?:\.\d+)?$")
_MATRIX_RE = re.compile(r"\\(begin|end)\{(?:bmatrix|Bmatrix|matrix|array)\}(?:\{[lcr|@ ]*\})?")
_BRACKETED_MATRIX_RE = re.compile(r"^[\[(]\s*(\\begin\{pmatrix\}.*\\end\{pmatrix\})\s*[\])]$", re.DOTALL)
_CHOICE_RE = re.compile(r"^\(([A-E])\)$")
_DOUBLED_SLASH_RE = re.compile(r"\\\\(?=[a-zA-Z])")
_MALFORMED = (  # \frac12, \frac1{2}, \frac{1}2, \sqrt3: the braces written out
    (re.compile(r"\\frac\s*(\d)\s*(\d)"), r"\\frac{\1}{\2}"),
    (re.compile(r"\\frac\s*(\d)\s*(?=\{)"), r"\\frac{\1}"),
    (re.compile(r"\\frac\s*(\{[^{}]*\})\s*(\d)"), r"\\frac\1{\2}"),
    (re.compile(r"\\sqrt\s*(\d)"), r"\\sqrt{\1}"),
)
_MEMBER_RE = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?\s*\\in\s*")  # "x \in [1, 2]" states the set
_SYNONYMS = (
    (re.compile(r"\\(?:varnothing|O)\b|\\\{\s*\\\}"), r"\\emptyset"),
    (re.compile(r"\\mathbb\s*\{?R\}?|\(\s*-\s*\\infty\s*,\s*\+?\s*\\infty\s*\)"), r"(-\\infty,\\infty)"),
    (re.compile(r"\binfinity\b"), r"\\infty"),
    (re.compile(r"\\(ne|le|ge)q\b"), r"\\\1"),
)


def _strip_wrappers(s: str) -> str:
    """Remove math delimiters and a box around the whole answer, repeatedly."""
    while True:
        s = s.strip()
        if not s.startswith(("$", "\\")):
            return s
        for a, b in _DELIMS:
            inner = s[len(a) : -len(b)] if len(s) >= len(a) + len(b) else None
            if inner is not None and s.startswith(a) and s.endswith(b) and a not in inner:
                s = inner
                break
        else:
            m = _WHOLE_BOX_RE.fullmatch(s)
            if not (m and _balanced(m.group(1))):
                return s
            s = m.group(1)


def _balanced(s: str) -> bool:
    depth = 0
    for c in s.replace("\\{", "").replace("\\}", ""):
        depth += (c == "{") - (c == "}")
        if depth < 0:
            return False
    return depth == 0


@lru_cache(maxsize=1 << 16)
def normalize_answer(text: str) -> str:
    """A canonical string for an answer: the cheap, exact rewrites graders agree on (module doc, step 3).

    Each rewrite runs only when its trigger is in the text: most answers are short and plain."""
    s = _strip_wrappers(text.replace("\n", " "))
    latex = "\\" in s
    if latex:
        if "\\\\" in s and "\\begin" not in s:
            s = _DOUBLED_SLASH_RE.sub(r"\\", s)  # a gold escaped twice: \\frac -> \frac
        if "frac" in s or "sqrt" in s:
            for a, b in ((r"\dfrac", r"\frac"), (r"\tfrac", r"\frac"), (r"\cfrac", r"\frac")):
                s = s.replace(a, b)
            for pattern, repl in _MALFORMED:
                s = pattern.sub(repl, s)
        if "left" in s or "right" in s or "big" in s or "Big" in s:
            s = _LEFT_RIGHT_RE.sub("", s)
        for d in (r"\displaystyle", r"\textstyle", "\\$"):
            s = s.replace(d, "")
        if "\\begin" in s:
            s = _MATRIX_RE.sub(lambda m: "\\" + m.group(1) + "{pmatrix}", s)
    if latex or "{," in s:
        s = _THOUSANDS_MARK_RE.sub("", s).replace("\\!", "")
    if latex or "~" in s:
        s = _SPACING_RE.sub(" ", s)
    s = s.replace("$", "")
    if "circ" in s or "degree" in s or "°" in s:
        s = _DEGREE_RE.sub("", s)
    if "%" in s or "p" in s:
        s = _PERCENT_RE.sub("", s)
    s = s.strip().rstrip(".").strip()
    if _DECIMAL_RE.fullmatch(s):
        return s  # a plain number: nothing below applies
    if _THOUSANDS_RE.match(s):
        return s.replace(",", "").replace(" ", "")
    if latex:
        if "\\begin" in s:
            m = _BRACKETED_MATRIX_RE.match(s)
            if m and m.group(1).count("\\begin{pmatrix}") == 1:
                s = m.group(1)
        m = _TEXT_WRAP_RE.match(s)
        if m:
            s = m.group(1).strip()
        m = _UNIT_RE.match(s)
        if m:
            s = m.group(1).strip()
        if "\\in" in s:
            s = _MEMBER_RE.sub("", s)
    if " " in s:
        m = _WORD_UNIT_RE.match(s)
        if m:
            s = m.group(1).strip()
    if s.startswith("("):
        m = _CHOICE_RE.match(s)
        if m:
            s = m.group(1)
    if latex or "inf" in s:
        for pattern, repl in _SYNONYMS:
            s = pattern.sub(repl, s)
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "").replace(" ", "")
    return s


_DIGIT_SPACE_RE = re.compile(r"(?<=\d)\s+(?=\d)")
_OTHER_SPACE_RE = re.compile(r"(?<!\d)\s+|\s+(?!\d)")
_WORDS_RE = re.compile(r"[A-Za-z ]+")


def _key(s: str) -> str:
    if " " not in s:
        return s.lower() if _WORDS_RE.fullmatch(s) else s
    k = _DIGIT_SPACE_RE.sub(" ", s)  # "1 1" is not 11 (thousands groups are joined earlier)
    k = _OTHER_SPACE_RE.sub("", k)
    return k.lower() if _WORDS_RE.fullmatch(s) else k  # words compare case-insensitively


# ---- the gold ------------------------------------------------------------------------------------


_SEPARATOR_RE = re.compile(r"[,;]|\b(?:and|or)\b")
_UNIT_TAIL_RE = re.compile(
    r"\s*[A-Za-z][A-Za-z./]*(?:\s+[A-Za-z][A-Za-z./]*)?\s*\.?"
)  # "miles", "beats/lifetime"


def gold_answer(gold: str) -> str:
    """The answer a gold states. Only clear forms are reduced, so that a gold's own words are never
    dropped ("$C$ is not invertible" stays whole): its boxes; a stated final answer ("... Final
    Answer: The final answer is $28\\%$. I hope it is correct."); math spans joined by "or", "and",
    commas ("$2$ or $-2$"); one math span and a unit ("$125$ miles"). Else the gold itself."""
    g = gold.strip()
    if "\\boxed" in g or "\\fbox" in g:
        return boxed_answer(g, loose=True) or g
    if not ("$" in g or "\\(" in g or "\\[" in g):
        return g
    spans = list(MATH_SPAN_RE.finditer(g))
    if not spans or (len(spans) == 1 and spans[0].span() == (0, len(g))):
        return g
    stated = stated_answer(g)
    if stated:
        return stated
    gaps = [g[: spans[0].start()]] + [g[a.end() : b.start()] for a, b in zip(spans, spans[1:])]
    tail = g[spans[-1].end() :]
    if all(is_connector(x) for x in gaps) and (
        is_connector(tail) or (len(spans) == 1 and _UNIT_TAIL_RE.fullmatch(tail))
    ):
        parts = [_span_text(m) for m in spans]
        out = parts[0]
        for gap, part in zip(gaps[1:], parts[1:]):  # "$a$ or $b$" is a list; "$x+$ $1$" one wrapped line
            out += (", " if _SEPARATOR_RE.search(gap) else " ") + part
        return out
    return g


def _span_text(m: re.Match) -> str:
    return next(v for v in m.groupdict().values() if v is not None).strip()


# ---- numbers -------------------------------------------------------------------------------------

_DECIMAL_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")
_REPEATING_RE = re.compile(r"([-+]?)(\d*)\.(\d*)\\overline\{(\d+)\}")  # 0.1\overline{6} = 1/6
_FRAC_RE = re.compile(r"([-+]?)\\frac\{([-+]?\d+)\}\{([-+]?\d+)\}|([-+]?\d+)/([-+]?\d+)")


def _number(s: str) -> Fraction | None:
    """A plain number ("073", "-2.5", "1/2", "\\frac{3}{4}") exactly; None for anything else."""
    if s.isdigit() and len(s) <= _NUMBER_CHARS:  # the common case, without Fraction's parser
        return Fraction(int(s))
    if " " in s and _DIGIT_SPACE_RE.search(s):  # "1 1" is no number (thousands groups are joined earlier)
        return None
    t = s.replace(" ", "")
    if not t or len(t) > _NUMBER_CHARS:
        return None
    if _DECIMAL_RE.fullmatch(t):
        return Fraction(t)
    m = _REPEATING_RE.fullmatch(t)
    if m:
        sign, whole, fixed, period = m.groups()
        value = Fraction(int(whole or 0)) + Fraction(int(fixed or 0), 10 ** len(fixed))
        value += Fraction(int(period), (10 ** len(period) - 1) * 10 ** len(fixed))
        return -value if sign == "-" else value
    m = _FRAC_RE.fullmatch(t)
    if m:
        sign, num, den = m.groups()[:3] if m.group(2) else ("", *m.groups()[3:])
        if int(den) == 0:
            return None
        return (-1 if sign == "-" else 1) * Fraction(int(num), int(den))
    return None


def _close(a: Fraction, b: Fraction, exact: bool) -> bool:
    if exact:
        return a == b
    return abs(a - b) <= max(Fraction(1, 10**9), Fraction(1, 10**6) * max(abs(a), abs(b)))


def _numbers_equal(p: str, g: str, pn: Fraction, gn: Fraction, percent: bool) -> bool:
    exact = "." not in p and "." not in g
    if _close(pn, gn, exact):
        return True
    return percent and (_close(pn, gn / 100, False) or _close(pn / 100, gn, False))


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
    if "=" not in s or _RELATION_SIGNS_RE.search(s) or len(_items(s)) > 1:
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


def _is_constant(s: str) -> bool:
    """No variables: only digits, operators and LaTeX commands (\\frac, \\sqrt, \\pi)."""
    return not _LETTER_RE.search(_COMMAND_RE.sub("", s))


def _items(s: str) -> list[str]:
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
def _parse(answer: str):
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
    with _within_budget():
        g, p = _parse(gold), _parse(pred)
        return bool(g and p and verify(g, p, timeout_seconds=None))


# ---- comparison ----------------------------------------------------------------------------------


def _match(p: str, g: str, percent: bool) -> bool:
    """Whether normalised answers ``p`` and ``g`` are equal (module doc, step 4)."""
    if not p or not g:
        return False
    if _key(p) == _key(g):
        return True
    pn, gn = _number(p), _number(g)
    if pn is not None and gn is not None:
        return _numbers_equal(p, g, pn, gn, percent)
    for side, other, side_is_pred in ((p, g, True), (g, p, False)):
        parts = [x.strip() for x in side.split("\\approx") if x.strip()] if "\\approx" in side else []
        if parts:  # "1/3 \approx 0.33": what either side of the approximation matches
            return any(
                _match(x, other, percent) if side_is_pred else _match(other, x, percent) for x in parts
            )
    pe, ge = _equation(p), _equation(g)
    if pe and ge:
        (pl, pr), (gl, gr) = pe, ge
        if _is_target(pl) and _is_target(gl) and _is_constant(pr) and _is_constant(gr):
            return _key(pl) == _key(gl) and _match(pr, gr, percent)  # x = 5 vs y = 5 differ
        return _math_verify(g, p)
    if pe or ge:  # one equation, one value
        (lhs, rhs), value = (pe, g) if pe else (ge, p)
        if not (_is_target(lhs) or (_is_constant(lhs) and _is_constant(rhs))):
            return False  # "2x + z = 1" is no value
        return _match(rhs, value, percent) if pe else _match(value, rhs, percent)
    pi, gi = _items(p), _items(g)
    if 1 < len(gi) <= MAX_LIST_ITEMS and len(pi) == len(gi):
        return _same_items(pi, gi, percent)
    if (pn is not None and _WORDS_RE.fullmatch(g)) or (gn is not None and _WORDS_RE.fullmatch(p)):
        return False  # a number is never a word
    return _math_verify(g, p)


_DECIMAL_COMMA_RE = re.compile(r"-?\d+,\d\d+")  # "1,22" (a list "1,2" has a one-digit item)


def answers_match(pred: str, gold: str) -> bool:
    """Whether the extracted answer ``pred`` equals ``gold`` (both answer strings, not responses)."""
    both = pred + gold
    percent = "%" in both or ("p" in both and ("percent" in both or "pct" in both))
    p, g = normalize_answer(pred), normalize_answer(gold)
    for a, b in ((p, g), (g, p)):  # "1,22" written with a decimal comma against "1.22"
        if _DECIMAL_COMMA_RE.fullmatch(a) and "." in b and _number(b) is not None:
            return _close(Fraction(a.replace(",", ".")), _number(b), False)
    return _match(p, g, percent)


# ---- grading -------------------------------------------------------------------------------------

_logged_errors: set[str] = set()


def _extract_for(response: str, gold_ans: str) -> str | None:
    # A bare number in the response may be the answer only when the gold is a number.
    g = normalize_answer(gold_ans)
    numeric = _number(g) is not None or _DECIMAL_COMMA_RE.fullmatch(g) is not None
    return extract_answer(response, numeric_fallback=numeric)


def answer_for_log(response: str, gold: str) -> str | None:
    """The answer :func:`grade` finds in ``response`` for this ``gold`` (None on any error: display only)."""
    try:
        return _extract_for(response, gold_answer(gold))
    except Exception:
        return None


def grade(response: str, gold: str, *, timeout_s: float | None = GRADE_TIMEOUT_S) -> Grade:
    """Grade ``response`` (free-form model output) against ``gold``; never raises (module doc)."""
    extracted = None
    outer = getattr(_budget, "deadline", None)  # a grade inside a grade keeps the outer budget
    if timeout_s is not None:
        mine = time.monotonic() + timeout_s
        _budget.deadline = mine if outer is None else min(outer, mine)
    try:
        g = gold_answer(gold)
        extracted = _extract_for(response, g)
        correct = extracted is not None and (
            _key(normalize_answer(extracted)) == _key(normalize_answer(gold))  # the gold's own text
            or answers_match(extracted, g)
        )
        return Grade(extracted, bool(correct))
    except GradingTimeout:
        return Grade(extracted, False, timed_out=True, error=f"timed out after {timeout_s:g} s")
    except Exception as e:  # grading never ends a run: the reason goes into the record
        reason = f"{type(e).__name__}: {str(e)[:200]}"
        if type(e).__name__ not in _logged_errors:
            _logged_errors.add(type(e).__name__)
            logger.warning("grading failed (%s); the response is graded incorrect", reason, exc_info=True)
        return Grade(extracted, False, error=reason)
    finally:
        _budget.deadline = outer


def clear_caches() -> None:
    """Forget every parsed and normalised answer (benchmarks time the grader from a cold start)."""
    _parse.cache_clear()
    normalize_answer.cache_clear()


def is_correct(response: str, gold: str) -> bool:
    """Whether ``response`` (free-form model output) ends with an answer equal to ``gold``."""
    return grade(response, gold).correct
