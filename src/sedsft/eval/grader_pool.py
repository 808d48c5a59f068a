"""Grade many responses, each under a time limit: in worker processes (a hard limit) or in this process.

One way to grade a batch, whichever the setting: ``open_grader(workers=..., timeout_s=...)`` gives a
:class:`GraderPool` (``workers > 0``) or an :class:`InProcessGrader` (``workers == 0``); both have
``grade(tasks, grader=None) -> list[Grade]``.

Why processes: Math-Verify and our own alarm (``sedsft.eval.grading``) work only in a main thread,
and a SymPy call stuck in C cannot be interrupted at all. Each worker is a separate process (started
with "spawn": safe next to torch threads) that grades one response at a time under the in-process
alarm; one that still runs past ``timeout_s`` is killed and replaced in the background, and its
response is graded incorrect (``timed_out``). Workers ignore Ctrl-C: the parent stops them. A pool
may be shared by several threads (verl calls its reward from worker threads); each call borrows idle
workers and gives them back.

>>> with open_grader(workers=2, timeout_s=2.0) as grader:
...     grades = grader.grade([("... \\\\boxed{4}", "4")])
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import wait

from sedsft.errors import UserError
from sedsft.eval.extract import PROTOCOLS
from sedsft.eval.grading import GRADE_TIMEOUT_S, Grade, GradingTimeout, answer_for_log, grade, time_limit

__all__ = ["Grade", "Grader", "GraderPool", "InProcessGrader", "grade_one", "open_grader", "shared_pool"]

Grader = Callable[[str, str], bool]  # (response, gold) -> correct; must be a module-level function for a pool
logger = logging.getLogger(__name__)

_START_TIMEOUT_S = 120.0  # importing SymPy in a fresh process on a busy 2-core machine
_INNER_SHARE = 0.8  # a worker's own alarm fires at this share of timeout_s: no kill needed


def check_grading_settings(*, workers: int, timeout_s: float, protocol: str = "sedsft") -> None:
    """UserError unless ``workers`` is an integer >= 0, ``timeout_s`` a finite number > 0 and ``protocol``
    one of :data:`sedsft.eval.extract.PROTOCOLS`."""
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown grading protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise UserError(
            f"grading workers must be an integer >= 0 (0: grade in this process), got {workers!r}"
        )
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not math.isfinite(timeout_s):
        raise UserError(f"grading timeout must be a finite number of seconds > 0, got {timeout_s!r}")
    if timeout_s <= 0:
        raise UserError(f"grading timeout must be > 0 seconds, got {timeout_s!r}")


def grade_one(
    response: str,
    gold: str,
    grader: Grader | None = None,
    *,
    timeout_s: float = GRADE_TIMEOUT_S,
    protocol: str = "sedsft",
) -> Grade:
    """Grade in this process, never raising. ``grader`` defaults to :func:`sedsft.eval.grading.grade`
    under ``protocol`` (a custom grader has its own rules)."""
    if grader is None:
        return grade(response, gold, timeout_s=timeout_s, protocol=protocol)
    extracted = answer_for_log(response, gold)
    try:
        with time_limit(timeout_s):
            return Grade(extracted, bool(grader(response, gold)))
    except GradingTimeout:
        return Grade(extracted, False, timed_out=True, error=f"timed out after {timeout_s:g} s")
    except Exception as e:  # a custom grader's bug: recorded with the sample, the run goes on
        logger.warning("grader %s failed: %s: %s", getattr(grader, "__name__", grader), type(e).__name__, e)
        return Grade(extracted, False, error=f"{type(e).__name__}: {str(e)[:200]}")


class InProcessGrader:
    """:class:`GraderPool`'s interface, grading in this process (a time limit in the main thread only)."""

    def __init__(self, *, timeout_s: float = GRADE_TIMEOUT_S, protocol: str = "sedsft"):
        check_grading_settings(workers=0, timeout_s=timeout_s, protocol=protocol)
        self.timeout_s = timeout_s
        self.protocol = protocol

    def grade(self, tasks: Sequence[tuple[str, str]], *, grader: Grader | None = None) -> list[Grade]:
        return [grade_one(r, g, grader, timeout_s=self.timeout_s, protocol=self.protocol) for r, g in tasks]

    def close(self) -> None:
        pass

    def __enter__(self) -> InProcessGrader:
        return self

    def __exit__(self, *exc) -> None:
        pass


@contextlib.contextmanager
def open_grader(
    *, workers: int, timeout_s: float, protocol: str = "sedsft"
) -> Iterator[GraderPool | InProcessGrader]:
    """A :class:`GraderPool` of ``workers`` processes, or an :class:`InProcessGrader` when ``workers == 0``."""
    check_grading_settings(workers=workers, timeout_s=timeout_s, protocol=protocol)
    grader = (
        GraderPool(workers=workers, timeout_s=timeout_s, protocol=protocol)
        if workers > 0
        else InProcessGrader(timeout_s=timeout_s, protocol=protocol)
    )
    try:
        yield grader
    finally:
        grader.close()


# ---- worker processes ------------------------------------------------------------------------------


def _worker_main(conn, inner_timeout_s: float, protocol: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent; it stops us
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    grade_one(r"\boxed{\frac{1}{2}}", "x^2")  # warm up: import SymPy and the LaTeX parser first
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if msg is None:
            return
        idx, grader, response, gold = msg
        conn.send((idx, grade_one(response, gold, grader, timeout_s=inner_timeout_s, protocol=protocol)))


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore Ctrl-C while a child starts, so that it inherits the setting (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Worker:
    def __init__(self, ctx, inner_timeout_s: float, protocol: str):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, inner_timeout_s, protocol), daemon=True)
        with _sigint_ignored():
            self.proc.start()
        child.close()

    def wait_ready(self) -> None:
        if not self.conn.poll(_START_TIMEOUT_S):
            self.kill()
            raise RuntimeError(f"a grading worker did not start within {_START_TIMEOUT_S:.0f} s")
        self.conn.recv()

    def kill(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.proc.kill()
            self.proc.join()
            self.conn.close()


class GraderPool:
    """A fixed number of grading processes with a per-response hard time limit. Use as a context manager."""

    def __init__(self, *, workers: int = 2, timeout_s: float = 2.0, protocol: str = "sedsft"):
        check_grading_settings(workers=workers, timeout_s=timeout_s, protocol=protocol)
        if workers < 1:
            raise UserError(f"a GraderPool needs workers >= 1, got {workers}; use InProcessGrader for 0")
        self.timeout_s = float(timeout_s)
        self.protocol = protocol  # the extraction rules of sedsft.eval.grading.grade
        self.num_timeouts = 0  # responses graded incorrect for running out of time
        self._ctx = mp.get_context("spawn")
        self._lock = threading.Lock()
        self._closed = False
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._workers: list[_Worker] = []
        started = [self._new_worker() for _ in range(workers)]
        try:
            for w in started:
                w.wait_ready()
                self._idle.put(w)
        except BaseException:
            self.close()
            raise

    def _new_worker(self) -> _Worker:
        w = _Worker(self._ctx, _INNER_SHARE * self.timeout_s, self.protocol)
        with self._lock:
            self._workers.append(w)
        return w

    def _replace(self, dead: _Worker) -> None:
        """Kill ``dead`` and start its successor in the background (the caller does not wait for it)."""
        dead.kill()
        with self._lock:
            if dead in self._workers:
                self._workers.remove(dead)
            if self._closed:
                return

        def start() -> None:
            try:
                w = self._new_worker()
                w.wait_ready()
            except Exception as e:  # the pool runs on with one worker less
                logger.error("could not replace a grading worker: %s", e)
                return
            if self._closed:
                w.kill()
            else:
                self._idle.put(w)

        threading.Thread(target=start, name="sedsft-grader-restart", daemon=True).start()

    def grade(self, tasks: Sequence[tuple[str, str]], *, grader: Grader | None = None) -> list[Grade]:
        """Grades of ``(response, gold)`` pairs, in order. Safe to call from several threads at once."""
        if self._closed:
            raise RuntimeError("this GraderPool is closed")
        results: list[Grade | None] = [None] * len(tasks)
        todo = deque(range(len(tasks)))
        busy: dict[_Worker, tuple[int, float]] = {}  # worker -> (task index, deadline)
        while todo or busy:
            while todo:  # borrow idle workers; wait for one only when this call holds none
                try:
                    w = self._idle.get(block=not busy, timeout=None if busy else _START_TIMEOUT_S)
                except queue.Empty:
                    if busy:
                        break
                    raise RuntimeError(
                        f"no grading worker became free within {_START_TIMEOUT_S:.0f} s"
                    ) from None
                i = todo.popleft()
                try:
                    w.conn.send((i, grader, *tasks[i]))
                except (OSError, ValueError):  # it died while idle
                    todo.appendleft(i)
                    self._replace(w)
                    continue
                busy[w] = (i, time.monotonic() + self.timeout_s)
            if not busy:
                continue
            next_deadline = min(dl for _, dl in busy.values())
            ready = wait([w.conn for w in busy], timeout=max(0.0, next_deadline - time.monotonic()))
            by_conn = {w.conn: w for w in busy}
            for conn in ready:
                w = by_conn[conn]
                i, _ = busy.pop(w)
                try:
                    _, result = conn.recv()
                except (EOFError, OSError):  # the worker died (e.g. out of memory): count it as a timeout
                    results[i] = self._timed_out(tasks[i], "its grading worker died")
                    self._replace(w)
                    continue
                results[i] = result
                if result.timed_out:  # the worker's own alarm stopped it: no kill needed
                    with self._lock:
                        self.num_timeouts += 1
                self._idle.put(w)
            now = time.monotonic()
            for w, (i, dl) in list(busy.items()):
                if dl <= now:
                    del busy[w]
                    results[i] = self._timed_out(
                        tasks[i], f"timed out after {self.timeout_s:g} s (worker killed)"
                    )
                    self._replace(w)
        return results  # type: ignore[return-value]

    def grade_one(self, response: str, gold: str, *, grader: Grader | None = None) -> Grade:
        return self.grade([(response, gold)], grader=grader)[0]

    def _timed_out(self, task: tuple[str, str], why: str) -> Grade:
        with self._lock:
            self.num_timeouts += 1
        return Grade(answer_for_log(*task), False, timed_out=True, error=why)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
        for w in workers:
            if w.proc.is_alive():
                with contextlib.suppress(OSError, ValueError):
                    w.conn.send(None)
                w.proc.join(timeout=2)
            w.kill()

    def __enter__(self) -> GraderPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_shared: dict[tuple[int, float], GraderPool] = {}
_shared_lock = threading.Lock()


def shared_pool(*, workers: int, timeout_s: float) -> GraderPool:
    """One process-wide pool per setting, started on first use and closed at exit (verl's reward threads)."""
    key = (workers, float(timeout_s))
    with _shared_lock:
        pool = _shared.get(key)
        if pool is None:
            import atexit

            pool = _shared[key] = GraderPool(workers=workers, timeout_s=timeout_s)
            atexit.register(pool.close)
        return pool
