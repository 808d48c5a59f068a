"""Worker counts are capped at the CPU cores this process may use, with a one-line notice."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sedsft.cores import usable_cores

from .real_cli import SRC


def test_usable_cores_follow_the_affinity_mask():
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no affinity masks on this OS")
    pin = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
    script = pin + "from sedsft.cores import usable_cores; print(usable_cores())"
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "1"  # one core allowed, whatever os.cpu_count() says
    assert usable_cores() == len(os.sched_getaffinity(0))


@pytest.fixture
def three_cores(monkeypatch):
    monkeypatch.setattr("sedsft.cores.usable_cores", lambda: 3)


def test_demo_jobs_are_capped_with_a_notice(three_cores, capsys):
    from sedsft.cli_parse import RunOptions, parse_command
    from sedsft.demo.cli import DemoArgs

    args, _ = parse_command("demo", ["--jobs", "1000"], DemoArgs, RunOptions)
    assert args.jobs == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["sedsft: note: --jobs 1000 is more than the 3 CPU cores this process may use; using 3"]
    args, _ = parse_command("demo", ["--jobs", "3"], DemoArgs, RunOptions)
    assert args.jobs == 3 and capsys.readouterr().err == ""  # within the cores: no word


def test_grading_and_reward_workers_are_capped(three_cores, capsys):
    from sedsft.cli_parse import GradingOptions
    from sedsft.rl.config import GRPOScriptArguments

    assert GradingOptions(grading_workers=64).grading_workers == 3
    assert GradingOptions(grading_workers=0).grading_workers == 0
    assert GRPOScriptArguments(reward_workers=9).reward_workers == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert [line.split(" is more")[0] for line in err] == [
        "sedsft: note: --grading_workers 64",
        "sedsft: note: --reward_workers 9",
    ]
