"""The dispatcher in a real process: a user error is one line (exit 2), a bug keeps its traceback, Ctrl-C is one line."""

from __future__ import annotations

import pytest

from .real_cli import run_sedsft

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


def run_fake(tmp_path, *argv):
    (tmp_path / "fake_command.py").write_text(FAKE)
    script = (
        "import sys; sys.path.insert(0, '.'); from sedsft import cli; "
        "cli.COMMANDS['fake'] = ('fake_command', 'a test command'); sys.exit(cli.main())"
    )
    return run_sedsft(*argv, cwd=tmp_path, script=script, timeout=60)


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
    proc = run_fake(tmp_path, *argv)
    assert proc.returncode == code
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(stderr), proc.stderr


def test_a_bug_keeps_its_traceback(tmp_path):
    proc = run_fake(tmp_path, "fake", "bug")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and 'KeyError: "a bug, not the user\'s fault"' in proc.stderr
