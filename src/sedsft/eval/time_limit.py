"""The time budget of one grade: an alarm (``signal.setitimer``) armed around its slow (SymPy) work.

Signals work only in a main thread, and only between Python bytecodes: elsewhere, or for a SymPy
call stuck in C, only a process that can be killed gives a hard limit
(:class:`sedsft.eval.grader_pool.GraderPool`).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time


class GradingTimeout(BaseException):  # BaseException: Math-Verify's `except Exception` must not swallow it
    """Raised inside :func:`time_limit` when its time is up."""


_armed = False
_budget = threading.local()  # .deadline: time.monotonic() by which the current grade must end


def _on_alarm(signum, frame):
    if _armed:
        raise GradingTimeout


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


@contextlib.contextmanager
def budget(seconds: float | None):
    """The time budget of one grade (a grade inside a grade keeps the outer, shorter one)."""
    outer = getattr(_budget, "deadline", None)
    if seconds is not None:
        mine = time.monotonic() + seconds
        _budget.deadline = mine if outer is None else min(outer, mine)
    try:
        yield
    finally:
        _budget.deadline = outer


@contextlib.contextmanager
def within_budget():
    """Arm the alarm for what is left of the current budget, around slow work only: the cheap paths
    then cost no system calls."""
    deadline = getattr(_budget, "deadline", None)
    if deadline is None:
        yield
        return
    left = deadline - time.monotonic()
    if left <= 0:
        raise GradingTimeout
    with time_limit(left):
        yield
