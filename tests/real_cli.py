"""Run the real ``sedsft`` command in a child process, on this checkout's code, offline and single-threaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def run_sedsft(
    *argv: str, cwd=None, script: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``python -m sedsft.cli ARGV`` (or ``python -c SCRIPT ARGV``); stdout and stderr captured as text."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([SRC, *(p for p in sys.path if p)]),
    }
    env.pop("SEDSFT_DEBUG", None)
    head = ["-c", script] if script is not None else ["-m", "sedsft.cli"]
    return subprocess.run(
        [sys.executable, *head, *argv], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


def one_error_line(proc: subprocess.CompletedProcess, command: str) -> str:
    """The single stderr line of a refused command (exit 2, no traceback)."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith(f"sedsft {command}: error: "), lines[0]
    return lines[0]
