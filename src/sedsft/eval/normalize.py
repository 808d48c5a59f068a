"""Answer strings in canonical form: the cheap, exact rewrites graders agree on, keeping structure.

``normalize_answer`` keeps matrix rows (``\\\\``), tuples and equations intact, so that what reaches
the comparison (``sedsft.eval.compare``) still means what was written. ``plain_number`` reads a
plain number exactly (a ``Fraction``: no float overflow, ``073`` = 73, ``0.\\overline{3}`` = 1/3).
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

_NUMBER_CHARS = 400  # longer digit strings are not converted to numbers


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
_SET_BUILDER_RE = re.compile(r"^\\\{\s*([A-Za-z])\s*(?:\||\\mid|:)\s*(.+?)\s*\\\}$")  # {x | -2 <= x < 1}
_SCALE_RE = re.compile(
    r"^([-+]?\d+(?:\.\d+)?)\s*(?:\\text\s*\{\s*)?(thousand|million|billion|trillion)s?\s*\}?$"
)  # "2.5 million": a number and a word for a power of ten
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_SYNONYMS = (  # (what must be in the text, pattern, replacement)
    (("\\varnothing", "\\O", "\\{"), re.compile(r"\\(?:varnothing|O)\b|\\\{\s*\\\}"), r"\\emptyset"),
    (
        ("mathbb", "infty"),
        re.compile(r"\\mathbb\s*\{?R\}?|\(\s*-\s*\\infty\s*,\s*\+?\s*\\infty\s*\)"),
        r"(-\\infty,\\infty)",
    ),
    (("infinity",), re.compile(r"\binfinity\b"), r"\\infty"),
    (("eq",), re.compile(r"\\(ne|le|ge)q(?:slant)?\b"), r"\\\1"),
)
_MALFORMED_ANY_RE = re.compile(r"\\(?:frac|sqrt)\s*\d|\\frac\s*\{[^{}]*\}\s*\d")
_SPACE_COMMAND_RE = re.compile(r"\\[,;: ]")


def _strip_wrappers(s: str) -> str:
    """Remove math delimiters and a box around the whole answer, repeatedly."""
    while True:
        s = s.strip()
        if not s.startswith(("$", "\\")):
            return s
        for a, b in _DELIMS:
            if s.startswith(a) and s.endswith(b) and len(s) >= len(a) + len(b):
                inner = s[len(a) : -len(b)]
                if a not in inner:
                    s = inner
                    break
        else:
            if not s.startswith(("\\boxed", "\\fbox")):
                return s
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
            if _MALFORMED_ANY_RE.search(s):
                for pattern, repl in _MALFORMED:
                    s = pattern.sub(repl, s)
        if "left" in s or "right" in s or "big" in s or "Big" in s:
            s = _LEFT_RIGHT_RE.sub("", s)
        for d in (r"\displaystyle", r"\textstyle", "\\$"):
            s = s.replace(d, "")
        if "\\begin" in s:
            s = _MATRIX_RE.sub(lambda m: "\\" + m.group(1) + "{pmatrix}", s)
    if "," in s or "\\!" in s or "\\;" in s:
        s = _THOUSANDS_MARK_RE.sub("", s).replace("\\!", "")
    if "~" in s or (latex and ("quad" in s or _SPACE_COMMAND_RE.search(s))):
        s = _SPACING_RE.sub(" ", s)
    s = s.replace("$", "")
    if "circ" in s or "degree" in s or "°" in s:
        s = _DEGREE_RE.sub("", s)
    if "%" in s or "percent" in s or "pct" in s:
        s = _PERCENT_RE.sub("", s)
    s = s.strip().rstrip(".").strip()
    if _DECIMAL_RE.fullmatch(s):
        return s  # a plain number: nothing below applies
    if "illion" in s or "thousand" in s:
        m = _SCALE_RE.match(s)
        if m:  # the number it states, before the unit rules below drop the word
            value = Fraction(m.group(1)) * _SCALES[m.group(2)]
            if value.denominator == 1:
                return str(value.numerator)
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
        if s.startswith("\\{"):
            m = _SET_BUILDER_RE.match(s)
            if m and m.group(1) in m.group(2):  # the set of the x that satisfy a condition: the condition
                s = m.group(2)
    if " " in s:
        m = _WORD_UNIT_RE.match(s)
        if m:
            s = m.group(1).strip()
    if s.startswith("("):
        m = _CHOICE_RE.match(s)
        if m:
            s = m.group(1)
    if latex or "inf" in s:
        for trigger, pattern, repl in _SYNONYMS:
            if any(t in s for t in trigger):
                s = pattern.sub(repl, s)
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "").replace(" ", "")
    return s


_DIGIT_SPACE_RE = re.compile(r"(?<=\d)\s+(?=\d)")
_OTHER_SPACE_RE = re.compile(r"(?<!\d)\s+|\s+(?!\d)")
WORDS_RE = re.compile(r"[A-Za-z ]+")


def key(s: str) -> str:
    """The string two normalised answers are equal by: white space dropped (but "1 1" is not 11)."""
    if " " not in s:
        return s.lower() if WORDS_RE.fullmatch(s) else s
    k = _DIGIT_SPACE_RE.sub(" ", s)  # "1 1" is not 11 (thousands groups are joined earlier)
    k = _OTHER_SPACE_RE.sub("", k)
    return k.lower() if WORDS_RE.fullmatch(s) else k  # words compare case-insensitively


_COMMAND_RE = re.compile(r"\\[A-Za-z]+")
_WORD_RE = re.compile(r"[A-Za-z]{2,}")
_TEXT_ANYWHERE_RE = re.compile(
    r"\\(?:text|textbf|textit|textnormal|textrm|mbox|mathrm|operatorname)\s*\{([^{}]*)\}"
)


def has_words(s: str) -> bool:
    """Whether ``s`` holds a word (two letters or more outside LaTeX commands: ``odd n``)."""
    return _WORD_RE.search(_COMMAND_RE.sub(" ", s)) is not None


def words_key(s: str) -> str:
    """The key of an answer that holds words, the same whichever way its words are written:
    ``\\text{odd } n``, ``odd $n$`` and ``Odd n`` share one."""
    s = normalize_answer(s)
    if "\\" in s:
        s = _TEXT_ANYWHERE_RE.sub(r" \1 ", s)
    s = _WORD_RE.sub(lambda m: m.group(0).lower(), s)
    return key(" ".join(s.split()))


# ---- numbers -------------------------------------------------------------------------------------

_DECIMAL_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")
_REPEATING_RE = re.compile(r"([-+]?)(\d*)\.(\d*)\\overline\{(\d+)\}")  # 0.1\overline{6} = 1/6
_FRAC_RE = re.compile(r"([-+]?)\\frac\{([-+]?\d+)\}\{([-+]?\d+)\}|([-+]?\d+)/([-+]?\d+)")


def plain_number(s: str) -> Fraction | None:
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


_NUMBER_UNIT_RE = re.compile(
    r"([-+]?(?:\d+\.?\d*|\.\d+))\s*(?:\\[,;: !]\s*)*"
    r"(?:\\(?:text|textnormal|textrm|mbox|mathrm)\s*\{\s*([^{}]*?)\s*\}|([A-Za-z][A-Za-z/.\s]*?))"
    r"(\^\{?\d\}?)?"
)


def number_and_unit(s: str) -> tuple[str, str] | None:
    """(number, unit) of an answer that is a decimal number and a unit, glued or not (``0.64N``,
    ``0.6400 N``, ``5\\text{ cm}^2``); None for anything else."""
    m = _NUMBER_UNIT_RE.fullmatch(_strip_wrappers(s))
    if m is None:
        return None
    unit = "".join((m.group(2) or m.group(3) or "").split()) + (m.group(4) or "").replace("{", "").replace(
        "}", ""
    )
    return (m.group(1), unit.rstrip(".")) if unit.rstrip(".") else None


DECIMAL_COMMA_RE = re.compile(r"-?\d+,\d\d+")  # "1,22" (a list "1,2" has a one-digit item)


def close(a: Fraction, b: Fraction, exact: bool) -> bool:
    """``a == b`` when ``exact``, else equal to a relative 1e-6 (absolute 1e-9)."""
    if exact:
        return a == b
    return abs(a - b) <= max(Fraction(1, 10**9), Fraction(1, 10**6) * max(abs(a), abs(b)))


def numbers_equal(p: str, g: str, pn: Fraction, gn: Fraction, percent: bool) -> bool:
    """Two plain numbers written as ``p`` and ``g``: exactly equal unless one is a decimal; with a
    percent sign written, ``x%`` also equals ``x/100``."""
    exact = "." not in p and "." not in g
    if close(pn, gn, exact):
        return True
    return percent and (close(pn, gn / 100, False) or close(pn / 100, gn, False))
