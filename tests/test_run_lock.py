"""One process per run folder (sedsft.runs, sedsft.run_lock): a second is refused naming the holder's
pid, or waits with --wait; a killed holder's lock is taken over; sedsft's lock file never makes a
folder look foreign."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sedsft.errors import UserError
from sedsft.run_lock import LOCK, check_held_by_this_job, release_all
from sedsft.runs import MANIFEST, RunSpec, open_run

from .real_cli import SRC, one_error_line, run_sedsft

SPEC = RunSpec("eval", settings={"temperature": 0.7})

# A child that opens the folder and holds it until its stdin closes; with "fork", it first forks a
# grandchild that outlives it (a worker), and prints the grandchild's pid too.
HOLDER = """
import os, sys, time
from sedsft.runs import RunSpec, open_run
open_run(sys.argv[1], RunSpec("eval", settings={"temperature": 0.7}))
if sys.argv[2:] == ["fork"]:
    pid = os.fork()
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    print(pid, flush=True)
print("locked", flush=True)
sys.stdin.read()
"""


def _env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC, **extra}


def _holder(out: Path, *args: str, env: dict | None = None, script: str = HOLDER) -> subprocess.Popen:
    command = [sys.executable, "-c", script, str(out), *args]
    return subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env or _env()
    )


def _wait_locked(proc: subprocess.Popen) -> None:
    line = proc.stdout.readline().strip()
    assert line == "locked", (line, proc.poll())


@pytest.fixture(autouse=True)
def _free_folders():
    yield
    release_all()


def test_a_second_process_is_refused_naming_the_holder_then_resumes(tmp_path):
    out = tmp_path / "out"
    holder = _holder(out)
    try:
        _wait_locked(holder)
        manifest = (out / MANIFEST).read_text()
        info = json.loads((out / LOCK).read_text())
        assert info["pid"] == holder.pid and info["host"] and "-c" in info["command"]
        with pytest.raises(UserError, match=rf"in use by another process \(pid {holder.pid},.*--wait"):
            open_run(out, SPEC)
        with pytest.raises(UserError, match=rf"pid {holder.pid}"):  # --overwrite does not take it either
            open_run(out, RunSpec("eval", settings={"temperature": 1.0}), overwrite=True)
        assert (out / MANIFEST).read_text() == manifest  # nothing written or lost
    finally:
        holder.stdin.close()
        assert holder.wait(30) == 0
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST]  # the holder let go: no lock file left
    assert open_run(out, SPEC).resumed


def test_wait_waits_for_the_holder_then_judges_afresh(tmp_path, capsys):
    out = tmp_path / "out"
    holder = _holder(out)
    _wait_locked(holder)
    threading.Timer(1.0, holder.stdin.close).start()  # the holder finishes a moment later
    run = open_run(out, SPEC, wait=True)
    assert holder.wait(30) == 0
    assert run.resumed
    err = capsys.readouterr().err
    assert f"in use by another process (pid {holder.pid}" in err and "waiting for it (--wait)" in err
    assert json.loads((out / LOCK).read_text())["pid"] == os.getpid()


def test_a_killed_holder_is_taken_over_even_with_a_forked_worker_alive(tmp_path):
    out = tmp_path / "out"
    holder = _holder(out, "fork")
    worker = int(holder.stdout.readline())
    try:
        _wait_locked(holder)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(30)
        assert (out / LOCK).is_file()  # a kill leaves the lock file; the kernel dropped the lock itself
        run = open_run(out, SPEC)  # the worker's copy of the descriptor was closed at fork
        assert run.resumed and json.loads((out / LOCK).read_text())["pid"] == os.getpid()
        run.close()
        assert not (out / LOCK).exists()
    finally:
        os.kill(worker, signal.SIGKILL)


def test_sedsft_bookkeeping_alone_is_an_empty_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK).write_text('{"pid": 999999}\n')  # a run killed between its lock and its manifest
    (out / f".{MANIFEST}.abc123.tmp").write_text('{"form')  # ... or while writing the manifest
    run = open_run(out, SPEC)
    assert not run.resumed and (out / MANIFEST).is_file()


def test_the_other_ranks_check_that_their_own_job_holds_the_folder(tmp_path, monkeypatch):
    out = tmp_path / "out"
    job = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29611"}
    holder = _holder(out, env=_env(**job))
    try:
        _wait_locked(holder)
        for k, v in job.items():
            monkeypatch.setenv(k, v)
        check_held_by_this_job(out)  # rank 1 of the holder's job: fine
        monkeypatch.setenv("MASTER_PORT", "29612")  # rank 1 of another job, whose main was refused
        with pytest.raises(UserError, match=rf"in use by another process \(pid {holder.pid}"):
            check_held_by_this_job(out)
    finally:
        holder.stdin.close()
        holder.wait(30)
    with pytest.raises(UserError, match="not opened by this job's main process"):
        check_held_by_this_job(out)


# A child that locks an empty folder, and writes its manifest only once told to (a run just starting).
LOCK_FIRST = """
import sys
from pathlib import Path
from sedsft.run_lock import lock
from sedsft.runs import RunSpec, open_run
Path(sys.argv[1]).mkdir()
lock(Path(sys.argv[1]))
print("locked", flush=True)
sys.stdin.readline()
open_run(sys.argv[1], RunSpec("eval", settings={"temperature": 0.7}))
"""


def test_a_waiter_judges_the_folder_again_and_never_mixes_runs(tmp_path, capsys):
    out = tmp_path / "out"
    holder = _holder(out, script=LOCK_FIRST)
    _wait_locked(holder)
    assert [p.name for p in out.iterdir()] == [LOCK]  # empty for the rule: the first judgement lets us in

    def start_the_holders_run():
        holder.stdin.write("go\n")
        holder.stdin.close()

    threading.Timer(1.0, start_the_holders_run).start()
    with pytest.raises(UserError, match=r"holds another run \(temperature 0.7 -> 1.0\)"):
        open_run(out, RunSpec("eval", settings={"temperature": 1.0}), wait=True)
    assert holder.wait(30) == 0
    assert "waiting for it (--wait)" in capsys.readouterr().err
    assert json.loads((out / MANIFEST).read_text())["settings"] == {"temperature": 0.7}
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST]  # and our lock file went with the refusal


# ---- two real `sedsft eval` processes on one folder ------------------------------------------------------

DATA_DIR = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "benchmarks").resolve()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from .tiny import char_tokenizer, tiny_llama

    tok = char_tokenizer()
    path = tmp_path_factory.mktemp("tiny_ckpt")
    tiny_llama(tok, max_position_embeddings=4096).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _eval_process(argv: list[str], stderr) -> subprocess.Popen:
    env = _env(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.Popen(
        [sys.executable, "-m", "sedsft.cli", *argv], stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
    )


def _until(condition, what: str, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_two_eval_runs_into_one_folder_never_duplicate_records(tiny_checkpoint, tmp_path):
    if not DATA_DIR.is_dir():
        pytest.skip(f"benchmark data not found at {DATA_DIR}")
    out = tmp_path / "out"
    argv = [
        "eval", "--model", str(tiny_checkpoint), "--benchmarks", "aime24,gsm8k", "--data_dir", str(DATA_DIR),
        "--output_dir", str(out), "--limit", "3", "--n", "2", "--max_new_tokens", "4", "--batch_size", "2",
        "--grading_workers", "0", "--no_progress", "--backend", "hf",
    ]  # fmt: skip
    first = _eval_process(argv, subprocess.PIPE)
    waiter_err = tmp_path / "waiter.err"
    waiter = None
    try:

        def first_holds() -> bool:
            assert first.poll() is None, "the first run ended before it was seen holding the folder"
            try:
                return json.loads((out / LOCK).read_text())["pid"] == first.pid
            except (OSError, ValueError, KeyError):
                return False

        _until(first_holds, "the first run to lock the folder")
        os.kill(first.pid, signal.SIGSTOP)  # frozen mid-run, lock held: the second surely meets it
        line = one_error_line(run_sedsft(*argv, timeout=120), "eval")
        assert f"is in use by another process (pid {first.pid}" in line and "--wait" in line
        with open(waiter_err, "w") as err:
            waiter = _eval_process([*argv, "--wait"], err)
        _until(lambda: "waiting for it (--wait)" in waiter_err.read_text(), "the third run to wait")
        os.kill(first.pid, signal.SIGCONT)
        stdout, stderr = first.communicate(timeout=120)
        assert first.returncode == 0, stderr[-2000:]
        stdout, _ = waiter.communicate(timeout=120)
        assert waiter.returncode == 0, waiter_err.read_text()[-2000:]
        assert "this run had finished" in stdout  # the waiter judged the folder afresh: nothing redone
    finally:
        for proc in (first, waiter):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
    records = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    keys = [(r["benchmark"], r["problem_id"], r["sample_index"]) for r in records]
    assert len(keys) == 2 * 3 * 2 and len(set(keys)) == len(keys)  # 2 benchmarks x 3 problems x 2 samples
    assert not (out / LOCK).exists()
