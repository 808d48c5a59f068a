"""Is a free-form math response correct? Extract its final answer, then compare it with the gold.

``grade(response, gold) -> Grade`` (``is_correct`` is its ``.correct``). Grading never raises: an
error or a time-out grades the response incorrect and says why in ``Grade.error``.

1. **Gold**: a gold written like a response is reduced to its answer (``gold_answer``), but only in
   clear forms: its boxes, a stated final answer, a worked solution ending "#### 540", math spans
   joined by "or"/"and"/commas, one math span and a unit. A gold's own words are never dropped ("$C$
   is not invertible" stays whole); a response's answer that keeps the same words matches it.
2. **Extraction**: :func:`sedsft.eval.extract.extract_answer`, in the paper's protocol order.
3. **Normalisation**: :func:`sedsft.eval.normalize.normalize_answer`, keeping the structure.
4. **Comparison**: :func:`sedsft.eval.compare.answers_match` (Math-Verify for what needs SymPy).

Time: a grade has a ``timeout_s`` budget, enforced in a main thread by an alarm around its SymPy
work (``sedsft.eval.time_limit``). A hard limit, in any thread, needs a
:class:`sedsft.eval.grader_pool.GraderPool`, which grades in processes it can kill.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from sedsft.errors import UserError
from sedsft.eval import compare
from sedsft.eval.compare import answers_match, list_items
from sedsft.eval.extract import (
    MATH_SPAN_RE,
    PROTOCOLS,
    SEPARATOR_RE,
    boxed_answer,
    extract_answer,
    final_part,
    is_connector,
    span_text,
    stated_answer,
    worded_answers,
)
from sedsft.eval.normalize import DECIMAL_COMMA_RE, has_words, key, normalize_answer, plain_number, words_key
from sedsft.eval.time_limit import GradingTimeout, budget, time_limit

__all__ = [
    "Grade",
    "GradingTimeout",
    "answer_for_log",
    "answers_match",
    "clear_caches",
    "extract_answer",
    "gold_answer",
    "grade",
    "is_correct",
    "normalize_answer",
    "time_limit",
]

logger = logging.getLogger(__name__)

GRADE_TIMEOUT_S = 3.0  # default time budget of one grade (enforced in a main thread)


@dataclass(frozen=True)
class Grade:
    """One graded response: the answer found in it, the verdict, and why it is False when not by comparison."""

    extracted: str | None
    correct: bool
    timed_out: bool = False
    error: str | None = None  # "timed out after 3 s", "OverflowError: ...": graded incorrect because of it


# ---- the gold ------------------------------------------------------------------------------------


_UNIT_TAIL_RE = re.compile(
    r"\s*[A-Za-z][A-Za-z./]*(?:\s+[A-Za-z][A-Za-z./]*)?\s*\.?"
)  # "miles", "beats/lifetime"


def gold_answer(gold: str) -> str:
    """The answer a gold states. Only clear forms are reduced, so that a gold's own words are never
    dropped ("$C$ is not invertible" stays whole): its boxes; a stated final answer ("... Final
    Answer: The final answer is $28\\%$. I hope it is correct."); a worked solution ending
    "#### 540" (GSM8K's raw answer field); math spans joined by "or", "and",
    commas ("$2$ or $-2$"); one math span and a unit ("$125$ miles"). Else the gold itself."""
    g = gold.strip()
    if "####" in g:  # a worked solution ending "#### 540" (GSM8K's raw answer field)
        stated = stated_answer(g)
        if stated:
            return stated
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
        parts = [span_text(m) for m in spans]
        out = parts[0]
        for gap, part in zip(gaps[1:], parts[1:]):  # "$a$ or $b$" is a list; "$x+$ $1$" one wrapped line
            out += (", " if SEPARATOR_RE.search(gap) else " ") + part
        return out
    return g


# ---- grading -------------------------------------------------------------------------------------

_logged_errors: set[str] = set()


def _extract_for(response: str, gold_ans: str, protocol: str = "sedsft") -> str | None:
    # A bare number in the response may be the answer only when the gold is a number.
    g = normalize_answer(gold_ans)
    numeric = plain_number(g) is not None or DECIMAL_COMMA_RE.fullmatch(g) is not None
    return extract_answer(response, numeric_fallback=numeric, protocol=protocol)


def _parts_boxed_apart(read: str, extracted: str, gold_ans: str) -> bool:
    """A gold of several parts, each boxed on its own ("$y_1 = \\boxed{a}$ and $y_2 = \\boxed{b}$"):
    the boxes joined by Math-Verify's looser rule, when that gives more parts than the strict one.
    ``read``: the part of the response that states its answer."""
    wanted = len(list_items(normalize_answer(gold_ans)))
    if wanted < 2 or len(list_items(normalize_answer(extracted))) >= wanted:
        return False
    joined = boxed_answer(read, loose=True)
    return joined is not None and joined != extracted and answers_match(joined, gold_ans)


def _worded_match(response: str, gold_ans: str) -> str | None:
    """A gold that holds words ("odd $n$") against the response's answer with its words kept: that
    answer when the words agree on both sides, however they are written (``\\text{odd } n``)."""
    if not has_words(gold_ans):
        return None
    wanted = words_key(gold_ans)  # string work only: no SymPy on this path
    return next((w for w in worded_answers(response) if words_key(w) == wanted), None)


def answer_for_log(response: str, gold: str) -> str | None:
    """The answer :func:`grade` finds in ``response`` for this ``gold`` (None on any error: display only)."""
    try:
        return _extract_for(response, gold_answer(gold))
    except Exception:
        return None


def grade(
    response: str, gold: str, *, timeout_s: float | None = GRADE_TIMEOUT_S, protocol: str = "sedsft"
) -> Grade:
    """Grade ``response`` (free-form model output) against ``gold``; never raises (module doc), but
    for an unknown ``protocol`` (a UserError, before anything is graded).

    ``protocol="qwen"`` extracts the answer as Qwen2.5-Math's parser does where the two differ
    (:func:`sedsft.eval.extract.extract_answer`); the comparison is the same."""
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown grading protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
    extracted = None
    try:
        with budget(timeout_s):
            g = gold_answer(gold)
            extracted = _extract_for(response, g, protocol)
            correct = extracted is not None and (
                key(normalize_answer(extracted)) == key(normalize_answer(gold))  # the gold's own text
                or answers_match(extracted, g)
                or _parts_boxed_apart(response if protocol == "qwen" else final_part(response), extracted, g)
            )
            if not correct:
                worded = _worded_match(response, g)
                if worded:
                    extracted, correct = worded, True
        return Grade(extracted, bool(correct))
    except GradingTimeout:
        return Grade(extracted, False, timed_out=True, error=f"timed out after {timeout_s:g} s")
    except Exception as e:  # grading never ends a run: the reason goes into the record
        reason = f"{type(e).__name__}: {str(e)[:200]}"
        if type(e).__name__ not in _logged_errors:
            _logged_errors.add(type(e).__name__)
            logger.warning("grading failed (%s); the response is graded incorrect", reason, exc_info=True)
        return Grade(extracted, False, error=reason)


def clear_caches() -> None:
    """Forget every parsed and normalised answer (benchmarks time the grader from a cold start)."""
    compare.parse_answer.cache_clear()
    normalize_answer.cache_clear()


def is_correct(response: str, gold: str) -> bool:
    """Whether ``response`` (free-form model output) ends with an answer equal to ``gold``."""
    return grade(response, gold).correct
