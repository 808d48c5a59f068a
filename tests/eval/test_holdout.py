"""grade() against the held-out rows of holdout_cases.py (issue 20), kept apart from the tuning tables."""

from __future__ import annotations

import pytest

from sedsft.eval.grading import grade

from .holdout_cases import HOLDOUT


@pytest.mark.parametrize(
    "gold,response,expected",
    [pytest.param(g, r, e, id=f"{src}-{i}") for i, (src, g, r, e) in enumerate(HOLDOUT)],
)
def test_holdout(gold, response, expected):
    result = grade(response, gold)
    assert result.correct is expected and result.error is None, result


def test_holdout_has_near_misses_for_its_sources():
    """Each source gives both kinds of row: accepting everything cannot pass the table."""
    by_source: dict[str, set[bool]] = {}
    for src, _, _, expected in HOLDOUT:
        by_source.setdefault(src.split(":")[0], set()).add(expected)
    assert all(kinds == {True, False} for kinds in by_source.values()), by_source
    assert sum(not e for *_, e in HOLDOUT) >= 0.4 * len(HOLDOUT)
