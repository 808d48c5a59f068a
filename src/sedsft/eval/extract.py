"""Find the final answer written in a free-form math response (or in a gold written like one).

Order, following the paper's protocol (Qwen2.5-Math's parser) with Math-Verify's fallbacks:

1. Minerva's sentence ``final answer is $X$. I hope it is correct.`` (checked before boxes, as Qwen does);
2. the last non-empty ``\\boxed{}`` / ``\\fbox{}``, joined with the boxes just before it when only
   connectors separate them (``\\boxed{1} and \\boxed{2}``, ``\\boxed{a}, \\boxed{b}``);
3. the last answer phrase (``final answer is``, ``the answer is``, ``Answer:``, ``**Final Answer:**``,
   ``####``), reduced to its math: ``The volume is $120$.`` and ``The volume is 120.`` give ``120``;
4. whichever ends later: the last math span or bare ``\\frac{a}{b}`` (``$..$``, ``$$..$$``, ``\\(..\\)``, ``\\[..\\]``, joined with
   the spans just before it by ``,``/``and``/``or``), a last line that is bare math (``x = 2``,
   ``[-2, 7]``, ``2\\sqrt{3}``: no words, no delimiters) or, with ``numeric_fallback``, the last number
   (the whole expression when that number is a factor or term of one: ``2(1 + 2) * 3``, not ``3``).

A response that thinks first (``<think>...</think>``) states its answer after the thinking: only that
part is read, unless nothing follows the thinking.

Work is linear in the text: boxes must close within ``BOX_SCAN_CHARS``, and steps 1, 3 and 4 read
only the last ``TAIL_CHARS`` characters. Nothing here evaluates anything.
"""

from __future__ import annotations

import re

BOX_SCAN_CHARS = 4_000  # a box's closing brace must come within this many characters
TAIL_CHARS = 4_000  # phrases and fallbacks look only at the end of the text
_MAX_BOXES = 16  # boxes looked at, last first

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*")
_TOKEN_RE = re.compile(r"[^\s$.,;]+")
_MINERVA_RE = re.compile(r"final answer is\s*\$(?P<x>(?:\\\$|[^$])+?)\$\s*\.?\s*I hope", re.IGNORECASE)
_PHRASE_RE = re.compile(
    r"final\s+answer\s*(?:\*\*)?\s*(?:is\b|:)|\banswer\s*(?:\*\*)?\s*(?:is\b|:)|\*\*final answer\*\*|####"
    r"|^[ \t]*#{1,6}[ \t]*(?:final[ \t]+)?answer[ \t]*:?[ \t]*$",  # a header line ("# Answer", PRM800K)
    re.IGNORECASE | re.MULTILINE,
)
# Math spans; inline ones stay on one line (Math-Verify's rule), display ones may span lines.
MATH_SPAN_RE = re.compile(
    r"(?<!\\)\$\$(?P<dd>.+?)(?<!\\)\$\$"
    r"|\\\[(?P<db>.+?)\\\]"
    r"|\\\((?P<ip>[^\n]+?)\\\)"
    r"|(?<![\\$])\$(?P<id>(?:\\\$|[^$\n])+?)(?<!\\)\$",
    re.DOTALL,
)
_MATH_OPEN_RE = re.compile(r"\$|\\\(|\\\[")
# Numbers: thousands groups, decimal comma with two decimals ("2,74"), decimals, a/b, .5
# A number is not glued to letters ("4x" is an expression, "K2" a name), except a metric unit.
_NUMBER_RE = re.compile(
    r"(?<![\w./])-?(?:[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?|[1-9]\d{0,2}(?: \d{3})+(?!\d)(?:\.\d+)?"
    r"|\d+,\d\d(?![\d,])|\d+(?:\.\d+)?(?:/\d+)?|\.\d+)"
    r"(?=[^\w/]|$|(?:[kcm]?m[²³]?|kg|mg|ml)(?![A-Za-z]))"
)
# A fraction of two numbers written without $ (Math-Verify's bare \frac rule)
_BARE_FRAC_RE = re.compile(r"-?\\[dtc]?frac\{-?\d+(?:\.\d+)?\}\{-?\d+(?:\.\d+)?\}")
# What may stand between parts of one answer: spaces, commas, "and", "or", \quad, $, \( \)...
_CONNECTOR_RE = re.compile(
    r"(?:\s|[,;&~]|\$|\\[()\[\],;: !]|\\q?quad\b|\\text\s*\{\s*(?:and|or|,)?\s*\}|\band\b|\bor\b)*",
    re.IGNORECASE,
)
_VERB_RE = re.compile(r"\b(?:is|are|was|were|equals|be)\b", re.IGNORECASE)
_SENTENCE_END_RE = re.compile(r"\.(?=\s|$)|\bI hope\b")


_THINK_END = "</think>"


def final_part(text: str) -> str:
    """The part of ``text`` that states its answer: what follows the last ``</think>`` when anything
    does (a box inside the thinking is a draft), else the whole text."""
    i = text.rfind(_THINK_END)
    if i < 0:
        return text
    after = text[i + len(_THINK_END) :]
    return after if after.strip() else text


def is_connector(gap: str) -> bool:
    """Whether ``gap`` holds only what may stand between the parts of one answer."""
    return _CONNECTOR_RE.fullmatch(gap) is not None


# ---- boxes -----------------------------------------------------------------------------------------


def _boxes(text: str) -> list[tuple[int, int, str | None]]:
    """(start, end, content) of the boxes in ``text``, last first; content None for a box that never closes."""
    out: list[tuple[int, int, str | None]] = []
    for m in reversed(list(_BOX_RE.finditer(text))):
        i = m.end()
        if i < len(text) and text[i] != "{":  # \boxed 5: one token without braces
            tok = _TOKEN_RE.match(text, i, i + 64)
            out.append((m.start(), tok.end() if tok else i, tok.group(0) if tok else ""))
        else:
            depth, j, end = 0, i, min(len(text), i + BOX_SCAN_CHARS)
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
            closed = depth == 0 and j < end
            out.append((m.start(), j + 1, text[i + 1 : j] if closed else None))
        if len(out) >= _MAX_BOXES:
            break
    return out


SEPARATOR_RE = re.compile(r"\b(?:and|or)\b|[,;]")


def _loosely_joined(gap: str) -> bool:
    # Math-Verify's rule for the boxes of a gold: close together, or near with a separator between
    return len(gap) < 10 or (len(gap) < 70 and SEPARATOR_RE.search(gap) is not None)


_LABEL_RE = re.compile(r"([A-Za-z](?:_\{?\w+\}?)?)\s*=\s*$")


def _label(text: str, start: int) -> tuple[int, str | None]:
    """Where the "x = " right before position ``start`` begins, and its name (None without one)."""
    m = _LABEL_RE.search(text, max(0, start - 24), start)
    return (m.start(), m.group(1)) if m else (start, None)


def boxed_answer(text: str, *, loose: bool = False) -> str | None:
    """The last non-empty box, joined with the boxes right before it that only connectors separate,
    also when each box follows the same name ("x = \\boxed{1} or x = \\boxed{4}"). ``loose``:
    Math-Verify's looser rule, for golds that box each part."""
    boxes = [(s, e, c.strip()) for s, e, c in _boxes(text) if c is not None and c.strip()]
    if not boxes:
        return None
    start, _, content = boxes[0]
    parts = [content]
    for s, e, c in boxes[1:]:
        cut, name = _label(text, start)
        same_name = name is not None and _label(text, s)[1] == name
        if not (_loosely_joined if loose else is_connector)(text[e : cut if same_name else start]):
            break
        if c != parts[0]:
            parts.insert(0, c)
        start = s
    return ", ".join(parts)


# ---- math spans --------------------------------------------------------------------------------------


def span_text(m: re.Match) -> str:
    """The content of a math span match (without its delimiters)."""
    return next(v for v in m.groupdict().values() if v is not None).strip()


def _last_math_run(text: str) -> tuple[int, str] | None:
    """(end, content) of the last math span, joined with the spans before it that connectors separate."""
    spans = list(MATH_SPAN_RE.finditer(text))
    if not spans:
        return None
    last = spans[-1]
    parts, start = [span_text(last)], last.start()
    for m in reversed(spans[:-1]):
        if not is_connector(text[m.end() : start]):
            break
        parts.insert(0, span_text(m))
        start = m.start()
    parts = [p for p in parts if p]
    return (last.end(), ", ".join(parts)) if parts else None


def _first_math_run(text: str) -> str | None:
    """The math run that opens ``text`` (it starts with $, \\( or \\[), joined like _last_math_run."""
    spans = []
    pos = 0
    for m in MATH_SPAN_RE.finditer(text):
        if m.start() != pos and not (spans and is_connector(text[pos : m.start()])):
            break
        spans.append(span_text(m))
        pos = m.end()
    parts = [p for p in spans if p]
    return ", ".join(parts) if parts else None


# ---- phrases -----------------------------------------------------------------------------------------


def _outside_math(line: str) -> list[tuple[int, int]]:
    """(start, end) of the stretches of ``line`` outside math spans."""
    out, pos = [], 0
    for m in MATH_SPAN_RE.finditer(line):
        out.append((pos, m.start()))
        pos = m.end()
    out.append((pos, len(line)))
    return out


def _reduce_phrase(rest: str, numeric: bool, words: bool = False) -> str | None:
    """The answer in the text that follows an answer phrase; ``words``: the whole sentence, with the
    words around its math kept (delimiters dropped)."""
    rest = rest.lstrip(" \t*:")
    if rest.startswith("\n"):
        rest = rest.lstrip()
    if _MATH_OPEN_RE.match(rest) and not words:
        run = _first_math_run(rest)
        if run:
            return run
    line = rest.split("\n", 1)[0]
    outside = _outside_math(line)
    for a, b in outside:  # the sentence ends at the first ". " or "I hope" outside math
        m = _SENTENCE_END_RE.search(line, a, b)
        if m:
            line = line[: m.start()]
            break
    line = line.strip().strip("*").strip()
    if words:  # the whole sentence ("$n$ is a power of $2$"); worded_answer also cuts at its verb
        return strip_delimiters(line).rstrip(".").strip() or None
    line = after_last_verb(line)
    run = _first_math_run(line) if _MATH_OPEN_RE.match(line) else None
    if run is None and MATH_SPAN_RE.search(line):
        found = _last_math_run(line)
        run = found[1] if found else None
    answer = run or line.strip().rstrip(".").strip()
    if numeric and answer and not _NUMBER_RE.fullmatch(answer) and "\\" not in answer:
        numbers = _NUMBER_RE.findall(answer)  # "Jane started growing 3 hours ago" -> "3"
        if numbers:
            answer = numbers[-1]
    return answer or None


def after_last_verb(line: str) -> str:
    """What follows the last verb outside math in ``line``: "The volume of $V$ is 120" -> "120"."""
    verbs = [m for a, b in _outside_math(line) for m in _VERB_RE.finditer(line, a, b)]
    return line[verbs[-1].end() :].strip() if verbs else line


def _phrase_answer(tail: str, numeric: bool, words: bool = False) -> str | None:
    # The last phrase wins. Every phrase holds "answer" or "####": scan from just before the last of
    # those first (a cheap string search), then, if that gives nothing, the whole tail.
    low = tail.lower() if tail.isascii() else None
    last = max(low.rfind("answer"), low.rfind("####")) if low is not None else 0
    if last < 0:
        return None
    for start in (max(0, last - 24), 0):
        for m in reversed(list(_PHRASE_RE.finditer(tail, start))):
            found = _reduce_phrase(tail[m.end() :], numeric, words)
            if found:
                return found
        if start == 0:
            break
    return None


# ---- the answer ------------------------------------------------------------------------------------


def _minerva(tail: str) -> str | None:
    found = list(_MINERVA_RE.finditer(tail)) if "hope" in tail or "Hope" in tail or "HOPE" in tail else []
    return found[-1].group("x").strip() if found else None


def stated_answer(text: str) -> str | None:
    """The answer ``text`` states in words: Minerva's sentence or an answer phrase (steps 1 and 3)."""
    tail = text[-TAIL_CHARS:]
    return _minerva(tail) or _phrase_answer(tail, numeric=False)


_DELIMITER_RE = re.compile(r"\$|\\[()\[\]]")


def strip_delimiters(s: str) -> str:
    """``s`` without math delimiters (``$``, ``\\(``, ``\\[`` and their ends)."""
    return _DELIMITER_RE.sub("", s) if "$" in s or "\\" in s else s


# A bare line of math: short, no word of two letters once commands are dropped, no delimiter; it
# does not start or end with an operator (a line that continues or breaks off a computation).
_COMMAND_NAME_RE = re.compile(r"\\[A-Za-z]+")
_TWO_LETTERS_RE = re.compile(r"[A-Za-z]{2}")
_BARE_LINE_CHARS = 80
_LINE_LABEL_RE = re.compile(r"^[A-Za-z]{1,12}\s*:\s*")  # "A: 540" (a question-and-answer label)


def _bare_last_line(tail: str) -> tuple[int, str] | None:
    """(end, text) of the last non-empty line of ``tail`` when it is bare math (module doc, step 4)."""
    end = len(tail.rstrip())
    start = tail.rfind("\n", 0, end) + 1
    line = tail[start:end].strip().strip("*").strip().rstrip(".").strip()
    label = _LINE_LABEL_RE.match(line)
    if label:
        start, line = start + label.end(), line[label.end() :].strip("*").strip()
    if not line or len(line) > _BARE_LINE_CHARS or _DELIMITER_RE.search(line):
        return None
    if line[0] in "=+*/^<>:;,." or line[-1] in "=+-*/^<>:;,({\\" or line.endswith("\\cdot"):
        return None
    if _TWO_LETTERS_RE.search(_COMMAND_NAME_RE.sub(" ", line)):
        return None
    if not any(c.isdigit() or c in "\\=" for c in line):
        return None
    return end, line


# What may surround a number inside one arithmetic expression (on its line).
_ARITHMETIC_RE = re.compile(r"(?:[\d.()+\-*/^×·]|\\times|\\cdot|[ \t])+")
_OPERATOR_RE = re.compile(r"(?<=[\d)\s])\s*(?:[-+*/^×·]|\\times|\\cdot)\s*(?=[\d(.])")


def _number_or_expression(tail: str, m: re.Match) -> str:
    """The number ``m`` found in ``tail``, or the expression it is a factor or term of."""
    line_start = tail.rfind("\n", 0, m.start()) + 1
    line_end = tail.find("\n", m.end())
    line = tail[line_start : len(tail) if line_end < 0 else line_end]
    at = m.start() - line_start
    for run in _ARITHMETIC_RE.finditer(line):
        if run.start() <= at < run.end():
            expr = run.group(0).strip().rstrip(".").strip()
            while expr.startswith("(") and expr.count("(") > expr.count(")"):
                expr = expr[1:].strip()
            while expr.endswith(")") and expr.count(")") > expr.count("("):
                expr = expr[:-1].strip()
            unfinished = line[run.end() :].lstrip().startswith("=")  # "3 + 4 =": a left side, no answer
            if expr != m.group(0) and _OPERATOR_RE.search(expr) and not unfinished:
                return expr
            break
    return m.group(0)


def worded_answers(text: str) -> list[str]:
    """The final answer with the words around its math kept (``odd $n$``, ``$f(x) = ax$ for some
    $a > 0$``), delimiters dropped: the sentence after the last answer phrase (whole, and after its
    last verb), else the last box and the rest of its sentence, else the last line. For golds that
    hold words, which are kept whole."""
    text = final_part(text)
    tail = text[-TAIL_CHARS:]
    found = _phrase_answer(tail, numeric=False, words=True)
    if found:
        cut = after_last_verb(found)
        return [found, cut] if cut and cut != found else [found]
    boxes = [b for b in _boxes(tail) if b[2]]
    if boxes:
        _, end, content = boxes[0]
        rest = tail[end:].split("\n", 1)[0]
        cut = _SENTENCE_END_RE.search(rest)
        rest = rest[: cut.start()] if cut else rest
        found = strip_delimiters(content + rest).strip()
    else:
        found = strip_delimiters(tail.strip().rsplit("\n", 1)[-1]).strip().rstrip(".").strip()
    return [found] if found else []


PROTOCOLS = ("sedsft", "qwen")


def extract_answer(text: str, *, numeric_fallback: bool = True, protocol: str = "sedsft") -> str | None:
    """The final answer written in ``text`` (module doc for the order), or None when it gives none.

    ``numeric_fallback``: the gold is a number, so a bare number in the text may be the answer.
    ``protocol``: ``"qwen"`` reads as Qwen2.5-Math's parser where sedsft's rules differ: the whole
    text (a box inside ``<think>`` counts), no bare last line, the last number alone (``3`` in
    ``2(1 + 2) * 3``).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    numeric, qwen = numeric_fallback, protocol == "qwen"
    if not text:
        return None
    if not qwen:
        text = final_part(text)
    tail = text[-TAIL_CHARS:]
    minerva = _minerva(tail)
    if minerva:
        return minerva
    if _BOX_RE.search(text):
        return boxed_answer(text)  # a response whose only boxes are empty gives no answer
    found = _phrase_answer(tail, numeric)
    if found:
        return found
    # (end, rank, answer): the latest wins; at one end, a bare line over the number that ends it
    candidates = []
    run = _last_math_run(tail)
    if run:
        candidates.append((run[0], 1, run[1]))
    fracs = list(_BARE_FRAC_RE.finditer(tail))
    if fracs:
        candidates.append((fracs[-1].end(), 1, fracs[-1].group(0)))
    line = None if qwen else _bare_last_line(tail)
    if line:
        candidates.append((line[0], 2, line[1]))
    if numeric:
        numbers = list(_NUMBER_RE.finditer(tail))
        if numbers:
            last = numbers[-1]
            candidates.append((last.end(), 0, last.group(0) if qwen else _number_or_expression(tail, last)))
    return max(candidates)[2] if candidates else None
