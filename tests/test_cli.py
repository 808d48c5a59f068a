"""The dispatcher in a real process: a user error is one line (exit 2), a bug keeps its traceback, Ctrl-C is one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

FAKE = """
import sys
from sedsft.errors import UserError

def main(argv):
    kind = argv[0]
    if kind == "user":
        raise UserError("--n must be an integer >= 1, got 0")
    if kind == "bug":
        raise KeyError("a bug, not the user's fault")
    if kind == "interrupt":
        raise KeyboardInterrupt
    return 0
"""


def run_sedsft(tmp_path, *argv):
    (tmp_path / "fake_command.py").write_text(FAKE)
    script = (
        "import sys; from sedsft import cli; cli.COMMANDS['fake'] = ('fake_command', 'a test command'); "
        "sys.exit(cli.main())"
    )
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    env.pop("SEDSFT_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-c", script, *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )


@pytest.mark.parametrize(
    "argv,code,stderr",
    [
        (["fake", "user"], 2, "sedsft fake: error: --n must be an integer >= 1, got 0"),
        (
            ["fake", "interrupt"],
            130,
            "sedsft fake: interrupted; finished work is saved; rerun the same command to resume",
        ),
        (["nope"], 2, "sedsft: error: unknown command 'nope'; choose one of: demo, sft"),
    ],
)
def test_one_line_outcomes(tmp_path, argv, code, stderr):
    proc = run_sedsft(tmp_path, *argv)
    assert proc.returncode == code
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(stderr), proc.stderr


def test_a_bug_keeps_its_traceback(tmp_path):
    proc = run_sedsft(tmp_path, "fake", "bug")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and 'KeyError: "a bug, not the user\'s fault"' in proc.stderr
