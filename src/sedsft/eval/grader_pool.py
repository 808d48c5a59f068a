"""Grade many responses in worker processes, each response under a hard time limit.

Math-Verify bounds its own work with ``signal.alarm``, which works only in a main thread, and a
SymPy call that hangs cannot be interrupted from inside. So each worker is a separate process
(started with "spawn": safe next to torch threads) that grades one response at a time; a response
that takes longer than ``timeout_s`` gets its worker killed and replaced, and is graded False.

>>> with GraderPool(workers=2, timeout_s=2.0) as pool:
...     grades = pool.grade([("... \\\\boxed{4}", "4")])
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait

from sedsft.eval.grading import extract_answer, is_correct, normalize_answer

Grader = Callable[[str, str], bool]  # (response, gold) -> correct; must be a module-level function for a pool

_START_TIMEOUT_S = 120.0  # importing SymPy in a fresh process on a busy 2-core machine


@dataclass(frozen=True)
class Grade:
    """What the log keeps about one graded response."""

    extracted: str | None
    correct: bool
    timed_out: bool = False


def log_answer(response: str, gold: str) -> str | None:
    """The answer shown in the per-sample log: what ``is_correct`` compared against ``gold``."""
    from sedsft.eval.grading import _as_number

    return extract_answer(response, numeric_fallback=_as_number(normalize_answer(gold)) is not None)


def grade_one(response: str, gold: str, grader: Grader | None = None) -> Grade:
    """Grade in this process. ``grader`` defaults to :func:`is_correct`."""
    return Grade(log_answer(response, gold), bool((grader or is_correct)(response, gold)))


def _worker_main(conn) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    grade_one(
        r"\boxed{\frac{1}{2}}", "x^2"
    )  # warm up: import SymPy and the LaTeX parser before timing starts
    conn.send(("ready", None))
    while True:
        msg = conn.recv()
        if msg is None:
            return
        idx, grader, response, gold = msg
        try:
            conn.send((idx, ("ok", grade_one(response, gold, grader))))
        except Exception as e:  # a custom grader's bug: report it to the parent instead of dying
            conn.send((idx, ("error", f"{type(e).__name__}: {e}")))


class _Worker:
    def __init__(self, ctx):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    def wait_ready(self) -> None:
        if not self.conn.poll(_START_TIMEOUT_S):
            self.kill()
            raise RuntimeError(f"a grading worker did not start within {_START_TIMEOUT_S:.0f} s")
        self.conn.recv()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join()
        self.conn.close()


class GraderPool:
    """A fixed set of grading processes with a per-response timeout. Use as a context manager."""

    def __init__(self, *, workers: int = 2, timeout_s: float = 2.0):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = timeout_s
        self._ctx = mp.get_context("spawn")
        self._workers = [_Worker(self._ctx) for _ in range(workers)]
        for w in self._workers:
            w.wait_ready()
        self.num_timeouts = 0

    def _replace(self, w: _Worker) -> _Worker:
        w.kill()
        new = _Worker(self._ctx)
        new.wait_ready()
        self._workers[self._workers.index(w)] = new
        return new

    def grade(self, tasks: Sequence[tuple[str, str]], *, grader: Grader | None = None) -> list[Grade]:
        """Grades of ``(response, gold)`` pairs, in order."""
        results: list[Grade | None] = [None] * len(tasks)
        todo = deque(range(len(tasks)))
        idle = list(self._workers)
        busy: dict[_Worker, tuple[int, float]] = {}  # worker -> (task index, deadline)
        while todo or busy:
            while todo and idle:
                w, i = idle.pop(), todo.popleft()
                w.conn.send((i, grader, *tasks[i]))
                busy[w] = (i, time.monotonic() + self.timeout_s)
            next_deadline = min(dl for _, dl in busy.values())
            ready = wait([w.conn for w in busy], timeout=max(0.0, next_deadline - time.monotonic()))
            by_conn = {w.conn: w for w in busy}
            for conn in ready:
                w = by_conn[conn]
                i, _ = busy.pop(w)
                try:
                    _, (kind, payload) = conn.recv()
                except (EOFError, OSError):  # the worker died (e.g. out of memory): count it as a timeout
                    results[i] = self._timed_out(tasks[i])
                    idle.append(self._replace(w))
                    continue
                if kind == "error":
                    raise RuntimeError(f"grader {getattr(grader, '__name__', grader)} failed: {payload}")
                results[i] = payload
                idle.append(w)
            now = time.monotonic()
            for w, (i, dl) in list(busy.items()):
                if dl <= now:
                    del busy[w]
                    results[i] = self._timed_out(tasks[i])
                    idle.append(self._replace(w))
        return results  # type: ignore[return-value]

    def _timed_out(self, task: tuple[str, str]) -> Grade:
        self.num_timeouts += 1
        return Grade(log_answer(*task), False, timed_out=True)

    def close(self) -> None:
        for w in self._workers:
            if w.proc.is_alive():
                with contextlib.suppress(OSError):
                    w.conn.send(None)
                w.proc.join(timeout=2)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
        self._workers = []

    def __enter__(self) -> GraderPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
