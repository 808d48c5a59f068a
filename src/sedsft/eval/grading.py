"""Is a free-form math response correct? Extract its final answer, then compare it with the gold.

Extraction (``extract_answer``), in order: the last non-empty ``\\boxed{}``/``\\fbox{}`` (a response
that boxes only empty boxes has no answer); "final answer is X"; "#### X"; "answer is X"; and, as
a last resort, the last number in the text (``is_correct`` uses it only when the gold is a number).

Equivalence (``answers_match``), cheapest first: equal after normalisation (``$``, ``\\left``,
``\\dfrac``, spacing, units, degree and percent signs, thousands separators, zero padding); both plain
numbers -> compare as numbers; otherwise Math-Verify (LaTeX -> SymPy) decides expressions,
intervals, sets, tuples and equations.

Safety: model output is untrusted. Only Math-Verify's LaTeX parser (ANTLR) sees it, never its
``ExprExtractionConfig``, which goes through SymPy's ``parse_expr`` (Python ``eval``). Work is
bounded: extraction is linear in the response, an answer longer than ``MAX_ANSWER_CHARS`` or nested
deeper than ``MAX_BRACE_DEPTH`` is not sent to SymPy, and Math-Verify's own timeouts are on when
called in a main thread. For a hard per-response limit run the grader in ``GraderPool`` workers.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from functools import lru_cache

# Math-Verify logs a warning per timeout or unparsable answer; one bad response per line would drown
# the progress bars. Errors still show.
logging.getLogger("math_verify").setLevel(logging.ERROR)

MAX_ANSWER_CHARS = 400  # longer "answers" are compared as strings only (no SymPy)
MAX_BRACE_DEPTH = 12  # deeper nesting is compared as strings only
_BOX_SCAN_CHARS = 4_000  # a box's closing brace must come within this many characters
_TAIL_CHARS = 4_000  # phrase and last-number fallbacks look only at the end of the response
_SYMPY_TIMEOUT_S = 1  # Math-Verify's signal timeout (whole seconds), main thread only

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*")
_NUMBER_RE = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w])|(?<![\w.])[-+]?\.\d+")
_PHRASES = (
    re.compile(r"final answer is[:\s]*", re.IGNORECASE),
    re.compile(r"####\s*"),
    re.compile(r"answer is[:\s]*", re.IGNORECASE),
    re.compile(r"answer:\s*", re.IGNORECASE),
)


def _box_contents(text: str) -> list[str | None]:
    """Contents of the boxes in ``text``, last first; None for a box that never closes."""
    out: list[str | None] = []
    for m in reversed(list(_BOX_RE.finditer(text))):
        i = m.end()
        if i < len(text) and text[i] != "{":
            # \boxed 5: one token without braces
            tok = re.match(r"[^\s$.,;]+", text[i : i + 64])
            out.append(tok.group(0) if tok else "")
            continue
        depth, j, end = 0, i, min(len(text), i + _BOX_SCAN_CHARS)
        while j < end:
            c = text[j]
            if c == "\\":  # \{ and \} are literal braces (\left\{ ... \right.), not grouping
                j += 2
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        out.append(text[i + 1 : j] if depth == 0 and j < end else None)
        if len(out) >= 8:  # enough to find the last non-empty one
            break
    return out


def _after_phrase(tail: str, phrase: re.Pattern) -> str | None:
    last = None
    for last in phrase.finditer(tail):  # noqa: B007 - the last match is the one we want
        pass
    if last is None:
        return None
    rest = tail[last.end() :].lstrip()
    boxed = _box_contents(rest)
    if boxed and boxed[-1]:
        return boxed[-1]
    for open_, close in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if rest.startswith(open_):
            end = rest.find(close, len(open_))
            if end > 0:
                return rest[len(open_) : end].strip()
    line = rest.split("\n", 1)[0]
    line = re.split(r"\.\s|\.$|\bI hope\b", line, maxsplit=1)[0]
    return line.strip().rstrip(".") or None


def extract_answer(response: str, *, numeric_fallback: bool = True) -> str | None:
    """The final answer written in ``response`` (see module doc for the order), or None."""
    if not response:
        return None
    boxes = _box_contents(response)
    if boxes:
        non_empty = [b for b in boxes if b and b.strip()]
        return non_empty[0].strip() if non_empty else None
    tail = response[-_TAIL_CHARS:]
    for phrase in _PHRASES:
        found = _after_phrase(tail, phrase)
        if found:
            return found
    if numeric_fallback:
        numbers = _NUMBER_RE.findall(tail)
        if numbers:
            return numbers[-1]
    return None


# ---- normalisation -------------------------------------------------------------------------------

_DROP = (r"\left", r"\right", r"\!", r"\,", r"\;", r"\:", r"\displaystyle", "\\$", "$", r"\%", "%", "°")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree")
_TEXT_WRAP_RE = re.compile(r"^\\(?:text|textbf|mbox|mathrm)\s*\{(.*)\}$")
_UNIT_RE = re.compile(r"^(.*?\d)\s*\\(?:text|mbox|mathrm)\s*\{\s*[a-zA-Z][a-zA-Z .\^/\d]*\}(\^\{?\d\}?)?$")
_WORD_UNIT_RE = re.compile(r"^([-+]?[\d.,]*\d)\s+[a-zA-Z]+(?:\s+[a-zA-Z]+)*\.?$")
_THOUSANDS_RE = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_ASSIGN_RE = re.compile(r"^[a-zA-Z](?:_\{?\w+\}?)?\s*=\s*(?=[^=])")
_FRAC_RE = re.compile(r"^([-+]?)\\frac\{(\d+)\}\{(\d+)\}$|^([-+]?)(\d+)/(\d+)$")


def normalize_answer(text: str) -> str:
    """A canonical string for an answer: the cheap, exact rewrites graders agree on."""
    s = text.strip()
    for a, b in ((r"\dfrac", r"\frac"), (r"\tfrac", r"\frac"), ("\\\\", " "), (r"\ ", " ")):
        s = s.replace(a, b)
    for d in _DROP:
        s = s.replace(d, "")
    s = _DEGREE_RE.sub("", s).strip()
    s = s.rstrip(".").strip()
    m = _TEXT_WRAP_RE.match(s)
    if m and "{" not in m.group(1):
        s = m.group(1).strip()
    m = _UNIT_RE.match(s) or _WORD_UNIT_RE.match(s)
    if m:
        s = m.group(1).strip()
    s = _ASSIGN_RE.sub("", s) if s.count("=") == 1 else s
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    return s


def _as_number(s: str) -> float | None:
    """A plain number ("073", "-2.5", "1/2", "\\frac{3}{4}") as a float; None for anything else."""
    t = s.replace(" ", "")
    if re.fullmatch(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", t):
        return float(t)
    m = _FRAC_RE.match(t)
    if m:
        sign, num, den = (
            (m.group(1), m.group(2), m.group(3)) if m.group(2) else (m.group(4), m.group(5), m.group(6))
        )
        if int(den) == 0:
            return None
        return (-1 if sign == "-" else 1) * int(num) / int(den)
    return None


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


def _timeout() -> int | None:
    # signal.alarm works only in the main thread; elsewhere the caller bounds the time (GraderPool).
    return _SYMPY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


@lru_cache(maxsize=1)
def _latex_only_config():
    from math_verify import LatexExtractionConfig

    # boxed first; never ExprExtractionConfig (it evals through SymPy's parse_expr).
    return [LatexExtractionConfig(boxed_match_priority=0)]


@lru_cache(maxsize=8192)
def _parse(answer: str):
    from math_verify import parse

    return parse(
        "\\boxed{" + answer + "}", extraction_config=_latex_only_config(), parsing_timeout=_timeout()
    )


def _sympy_match(gold: str, pred: str) -> bool:
    from math_verify import verify
    from math_verify.errors import TimeoutException

    try:
        g, p = _parse(gold), _parse(pred)
        if not g or not p:
            return False
        return bool(verify(g, p, timeout_seconds=_timeout()))
    except (Exception, TimeoutException):  # any failure to decide is "not shown equal"
        return False


def answers_match(pred: str, gold: str) -> bool:
    """Whether the extracted answer ``pred`` equals ``gold`` (both answer strings, not responses)."""
    p, g = normalize_answer(pred), normalize_answer(gold)
    if not p or not g:
        return False
    if p.replace(" ", "") == g.replace(" ", ""):
        return True
    pn, gn = _as_number(p), _as_number(g)
    if pn is not None and gn is not None:
        return math.isclose(pn, gn, rel_tol=1e-6, abs_tol=1e-9)
    if _too_complex(p) or _too_complex(g):
        return False
    return _sympy_match(g, p)


def is_correct(response: str, gold: str) -> bool:
    """Whether ``response`` (free-form model output) ends with an answer equal to ``gold``."""
    numeric_gold = _as_number(normalize_answer(gold)) is not None
    answer = extract_answer(response, numeric_fallback=numeric_gold)
    return answer is not None and answers_match(answer, gold)
