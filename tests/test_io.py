"""Resumable logs and atomic writes: what long jobs rely on to never lose finished work."""

import json

import pytest

from sedsft.io import JsonlLog, atomic_write_json, read_json, read_jsonl_records


def test_jsonl_log_appends_and_reads_back(tmp_path):
    log = JsonlLog(tmp_path / "a" / "log.jsonl")
    log.append({"k": 1})
    log.extend([{"k": 2}, {"k": 3}])
    assert [r["k"] for r in JsonlLog(log.path).records()] == [1, 2, 3]


def test_torn_last_line_is_dropped_and_repaired(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"k": 1}\n{"k": 2}\n{"k": 3, "resp')  # a writer killed mid-line
    assert [r["k"] for r in read_jsonl_records(path)] == [1, 2]
    log = JsonlLog(path)
    log.append({"k": 3})
    assert [r["k"] for r in log.records()] == [1, 2, 3]


def test_corruption_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"k": 1}\nnot json\n{"k": 3}\n')
    with pytest.raises(ValueError, match="log.jsonl:2: corrupt JSONL record"):
        list(read_jsonl_records(path))


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2})
    assert read_json(path) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temporary left behind
    assert json.loads(path.read_text()) == {"a": 2}
