"""How many worker processes this machine can run at once: the CPU cores this process may use.

Every option that starts worker processes (``demo --jobs``, ``--grading_workers``, ``grpo
--reward_workers``) is capped here when its config is built, with a one-line notice on stderr: more
workers than cores only time-share the cores (and, for grading, turn a per-response time limit
into spurious time-outs).
"""

from __future__ import annotations

import os
import sys


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask where the OS has one, else the count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no affinity mask
        return max(1, os.cpu_count() or 1)


def cap_workers(flag: str, value: int) -> int:
    """``value`` worker processes, or the usable cores if there are fewer (with a one-line notice)."""
    cores = usable_cores()
    if value <= cores:
        return value
    note = f"{flag} {value} is more than the {cores} CPU cores this process may use; using {cores}"
    print(f"sedsft: note: {note}", file=sys.stderr)
    return cores
