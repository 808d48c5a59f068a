"""sedsft.runs: the same run resumes, another is refused naming what differs, nothing is mixed."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sedsft.errors import UserError
from sedsft.run_lock import LOCK, release_all
from sedsft.runs import MANIFEST, RunSpec, fingerprint, open_run, settings_of


@pytest.fixture(autouse=True)
def _free_folders():
    yield
    release_all()  # what the end of a command does: each test's folders are let go


@pytest.fixture
def inputs(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"a": 1}')
    (model / "weights.bin").write_bytes(b"\0" * 100)
    data = tmp_path / "data.jsonl"
    data.write_text('{"q": 1}\n')
    return model, data


def spec(model, data, **settings):
    return RunSpec("eval", settings={"temperature": 0.7, **settings}, inputs={"model": model, "data": data})


def test_new_then_resume_then_finished(tmp_path, inputs):
    out = tmp_path / "out"
    run = open_run(out, spec(*inputs))
    assert not run.resumed and not run.finished and (out / MANIFEST).is_file()
    (out / "samples.jsonl").write_text("{}\n")
    run = open_run(out, spec(*inputs))
    assert run.resumed and not run.finished
    run.mark_finished()
    assert open_run(out, spec(*inputs)).finished


def test_other_settings_or_inputs_are_refused_naming_the_difference(tmp_path, inputs):
    model, data = inputs
    out = tmp_path / "out"
    open_run(out, spec(model, data))
    with pytest.raises(UserError, match=r"holds another run \(temperature 0.7 -> 1.0\).*--overwrite"):
        open_run(out, spec(model, data, temperature=1.0))
    with pytest.raises(UserError, match=r"made by `sedsft eval`, not `sedsft filter`"):
        open_run(out, RunSpec("filter", settings={"temperature": 0.7}, inputs={"model": model, "data": data}))
    (model / "config.json").write_text('{"a": 2}')
    with pytest.raises(UserError, match=r"model .*model changed \(config.json\)"):
        open_run(out, spec(model, data))
    other = tmp_path / "other.jsonl"
    other.write_text('{"q": 2}\n')
    with pytest.raises(UserError, match=r"data .*data.jsonl -> .*other.jsonl"):
        open_run(out, spec(model, other))


def test_overwrite_starts_clean(tmp_path, inputs):
    model, data = inputs
    out = tmp_path / "out"
    open_run(out, spec(model, data))
    (out / "validation.parquet").write_text("old")
    (out / "checkpoint-2").mkdir()
    run = open_run(out, spec(model, data, temperature=1.0), overwrite=True)
    assert not run.resumed and sorted(p.name for p in out.iterdir()) == [LOCK, MANIFEST]  # the lock stays
    release_all()
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST]  # and goes with the command
    assert json.loads((out / MANIFEST).read_text())["settings"]["temperature"] == 1.0


def test_a_folder_of_someone_else_is_never_used_or_deleted(tmp_path, inputs):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(UserError, match=r"is not empty \(thesis.tex, ...\) and holds no sedsft run"):
            open_run(out, spec(*inputs), overwrite=overwrite)
    assert (out / "thesis.tex").read_text() == "precious"
    hidden = tmp_path / "repo"
    (hidden / ".git").mkdir(parents=True)
    (hidden / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (hidden / ".env").write_text("TOKEN=secret\n")
    for overwrite in (False, True):  # hidden entries are content too
        with pytest.raises(UserError, match=r"repo is not empty \(.env, .git, ...\) and holds no sedsft run"):
            open_run(hidden, spec(*inputs), overwrite=overwrite)
    assert sorted(p.name for p in hidden.iterdir()) == [".env", ".git"]  # nothing written, nothing deleted
    assert (hidden / ".git" / "HEAD").read_text() == "ref: refs/heads/main\n"
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        open_run(a_file, spec(*inputs))


def test_same_content_elsewhere_resumes(tmp_path, inputs):
    model, data = inputs
    out = tmp_path / "out"
    open_run(out, spec(model, data))
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(data.read_bytes())
    assert open_run(out, spec(model, copy)).resumed


def test_fingerprint_definition(tmp_path, inputs, monkeypatch):
    import hashlib

    model, data = inputs
    assert fingerprint(data)["fingerprint"] == "sha256:" + hashlib.sha256(data.read_bytes()).hexdigest()
    assert fingerprint(tmp_path / "nope")["fingerprint"] == "missing"
    monkeypatch.setattr("sedsft.runs.SMALL_FILE", 10)  # weights.bin (100 bytes) is now "large"
    entry = fingerprint(model)
    st = os.stat(model / "weights.bin")
    assert entry["files"]["weights.bin"] == f"size=100,mtime_ns={st.st_mtime_ns}"
    lines = "".join(f"{k} {v}\n" for k, v in sorted(entry["files"].items()))
    assert entry["fingerprint"] == "sha256:" + hashlib.sha256(lines.encode()).hexdigest()
    (model / ".cache").mkdir()
    (model / ".cache" / "x").write_text("ignored")
    assert fingerprint(model)["fingerprint"] == entry["fingerprint"]
    inner = model / "eval_out"
    inner.mkdir()
    (inner / "samples.jsonl").write_text("{}\n")
    assert fingerprint(model, exclude=inner)["fingerprint"] == entry["fingerprint"]


def test_settings_leave_out_what_does_not_change_results():
    @dataclass
    class C:
        n: int = 8
        progress: bool = field(default=True, metadata={"manifest": False})
        names: tuple = ("a", "b")

    assert settings_of(C(), exclude={"nothing"}) == {"n": 8, "names": ["a", "b"]}


def test_other_processes_only_check(tmp_path, inputs):
    out = tmp_path / "out"
    with pytest.raises(UserError):
        open_run(out, spec(*inputs), main_process=False)
    open_run(out, spec(*inputs))
    run = open_run(out, spec(*inputs), main_process=False)
    run.mark_finished()  # writes nothing from a non-main process
    assert not json.loads((out / MANIFEST).read_text())["state"]["finished"]


def test_last_checkpoint_skips_a_torn_one(tmp_path):
    from sedsft.runs import last_checkpoint

    assert last_checkpoint(tmp_path / "nope") is None and last_checkpoint(tmp_path) is None
    for step, complete in ((2, True), (10, True), (12, False)):  # killed while writing checkpoint-12
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"w")
        if complete:
            (d / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")


def _good_manifest(tmp_path, inputs) -> dict:
    out = tmp_path / "made"
    open_run(out, spec(*inputs))
    return json.loads((out / MANIFEST).read_text())


def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


# what a hand edit can leave, and what the refusal says is wrong (the manifest is checked as a whole)
BROKEN = {
    "not JSON": (lambda m: '{"format": "sedsft-run/1",\n  "command": ', r"not JSON: .* at line 2"),
    "not UTF-8": (lambda m: b"\xff\xfe{}", r"not UTF-8 text"),
    "an array": (lambda m: [m], r"it holds an array, not an object"),
    "no state": (lambda m: _without(m, "state"), r"'state' is missing"),
    "settings a list": (lambda m: {**m, "settings": [1, "a"]}, r"'settings' must be an object, not an array"),
    "command a number": (lambda m: {**m, "command": 3}, r"'command' must be a string, not a number"),
    "other format": (lambda m: _without(m, "format"), r"'format' is null, not \"sedsft-run/1\""),
    "input a path": (
        lambda m: {**m, "inputs": {"model": "/models/x"}},
        r"input 'model' must be an object with 'path' and 'fingerprint' strings",
    ),
    "files not strings": (
        lambda m: {**m, "inputs": {"m": {"path": "/m", "fingerprint": "x", "files": {"a": 1}}}},
        r"input 'm': 'files' must map file names to fingerprint strings",
    ),
    "finished a string": (
        lambda m: {**m, "state": {**m["state"], "finished": "yes"}},
        r"'state.finished' must be true or false, not \"yes\"",
    ),
    "version a number": (
        lambda m: {**m, "state": {**m["state"], "sedsft_version": 1}},
        r"'state.sedsft_version' must be a string, not a number",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_manifest_is_refused_whole_and_nothing_is_lost(tmp_path, inputs, case):
    make, problem = BROKEN[case]
    content = make(_good_manifest(tmp_path, inputs))
    raw = content if isinstance(content, (bytes, str)) else json.dumps(content, indent=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_bytes(raw if isinstance(raw, bytes) else raw.encode())
    (out / "samples.jsonl").write_text('{"done": 1}\n')
    for overwrite in (False, True):
        with pytest.raises(UserError) as e:
            open_run(out, spec(*inputs), overwrite=overwrite)
        message = str(e.value)
        assert message.startswith(f"{out / MANIFEST} is not a valid sedsft run manifest (")
        assert re.search(problem, message), message
        assert "restore the file, or choose another --output_dir" in message and "\n" not in message
    assert sorted(p.name for p in out.iterdir()) == ["samples.jsonl", MANIFEST]  # no lock file either
    assert (out / MANIFEST).read_bytes() == (raw if isinstance(raw, bytes) else raw.encode())
    assert (out / "samples.jsonl").read_text() == '{"done": 1}\n'


def test_a_broken_manifest_through_the_command_is_one_line(tmp_path, capsys):
    from sedsft.cli import main

    responses = tmp_path / "r.jsonl"
    responses.write_text('{"problem_id": 1, "response": "\\\\boxed{2}", "gold": "2"}\n')
    out = tmp_path / "out"
    argv = ["eval", "--responses", str(responses), "--output_dir", str(out), "--grading_workers", "0"]
    assert main(argv) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**manifest, "settings": [1, "a"]}))  # was a TypeError
    graded = (out / "graded.jsonl").read_text()
    capsys.readouterr()
    for extra in ([], ["--overwrite"]):
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("sedsft eval: error: ") and "'settings' must be" in err[0]
    assert (out / "graded.jsonl").read_text() == graded


def _hidden_folder(root) -> Path:
    folder = root / "repo"
    (folder / ".git").mkdir(parents=True)
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / ".env").write_text("TOKEN=secret\n")
    return folder


def test_every_command_refuses_a_folder_of_hidden_files(tmp_path, capsys, monkeypatch):
    from sedsft.cli import main

    data = tmp_path / "prompts.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "answer": "4"}\n')
    responses = tmp_path / "r.jsonl"
    responses.write_text('{"response": "\\\\boxed{2}", "gold": "2"}\n')
    (tmp_path / "pipe.py").write_text("def run(r, k):\n    return {'avg': r}\n")
    monkeypatch.chdir(tmp_path)
    out = _hidden_folder(tmp_path)
    commands = [
        ["export-verl", "--data", str(data)],
        ["eval", "--responses", str(responses), "--grading_workers", "0"],
        ["sweep", "--pipeline", "pipe:run", "--grid", "r=0.5", "k=2"],
        ["analyze", "weights", "--lams", "1"],
    ]
    for argv in commands:
        for extra in ([], ["--overwrite"]):
            assert main([*argv, "--output_dir", str(out), *extra]) == 2, argv
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and f"{out} is not empty (.env, .git, ...) and holds no sedsft run" in err[0]
    assert sorted(p.name for p in out.iterdir()) == [".env", ".git"]
    assert [p.name for p in (out / ".git").iterdir()] == ["HEAD"]
    assert (out / ".env").read_text() == "TOKEN=secret\n"


def test_an_output_folder_under_a_file_is_refused(tmp_path, inputs):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(UserError, match=rf"{re.escape(str(a_file))} is a file"):
        open_run(a_file / "sub" / "out", spec(*inputs))
    assert a_file.read_text() == "mine"
