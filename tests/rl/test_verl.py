"""export-verl writes verl's schema; the exported reward module scores responses from another folder."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pyarrow.parquet as pq
import pytest

from sedsft.cli import main as sedsft_main
from sedsft.rl.verl import VERL_COLUMNS, verl_schema


def _load_module(path):
    spec = importlib.util.spec_from_file_location("copied_reward", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_schema_and_split(qa_file, tmp_path):
    out = tmp_path / "verl"
    assert (
        sedsft_main(
            ["export-verl", "--data", str(qa_file), "--output_dir", str(out), "--val_fraction", "0.25"]
        )
        == 0
    )
    train, val = pq.read_table(out / "train.parquet"), pq.read_table(out / "validation.parquet")
    assert train.schema.equals(verl_schema()) and val.schema.equals(verl_schema())
    assert tuple(train.column_names) == VERL_COLUMNS
    assert (train.num_rows, val.num_rows) == (3, 1)
    rows = train.to_pylist() + val.to_pylist()
    assert sorted(r["reward_model"]["ground_truth"] for r in rows) == ["2", "4", "6", "8"]
    for r in rows:
        assert r["ability"] == "math" and r["reward_model"]["style"] == "rule"
        assert [m["role"] for m in r["prompt"]] == ["system", "user"]
    assert [r["extra_info"] for r in val.to_pylist()] == [{"split": "validation", "index": 0}]
    assert [r["extra_info"]["index"] for r in train.to_pylist()] == [0, 1, 2]


def test_export_with_val_file(qa_file, tmp_path):
    val_file = tmp_path / "val.json"
    val_file.write_text(json.dumps([{"problem": "5+5?", "solution": "\\boxed{10}"}]))
    out = tmp_path / "verl"
    assert (
        sedsft_main(
            ["export-verl", "--data", str(qa_file), "--val_data", str(val_file), "--output_dir", str(out)]
        )
        == 0
    )
    assert pq.read_table(out / "train.parquet").num_rows == 4
    assert pq.read_table(out / "validation.parquet").to_pylist()[0]["reward_model"]["ground_truth"] == "10"


@pytest.mark.parametrize(
    ("response", "gold", "score"),
    [
        ("Adding, we get \\boxed{4}.", "4", 1.0),
        ("Adding, we get \\boxed{5}.", "4", 0.0),
        ("\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}", 1.0),
        ("The final answer is $42,409$.", "42409", 1.0),
        ("\\boxed{4}", "", 0.0),  # empty gold: verl needs a number
    ],
)
def test_copied_reward_module_scores(qa_file, tmp_path, response, gold, score):
    out = tmp_path / "verl"
    assert sedsft_main(["export-verl", "--data", str(qa_file), "--output_dir", str(out)]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    module = _load_module(shutil.copy(out / "reward.py", elsewhere / "my_reward.py"))
    value = module.compute_score("sedsft_math", response, gold, extra_info={"split": "train", "index": 0})
    assert value == score and isinstance(value, float)


def test_export_errors_are_one_line(qa_file, tmp_path, capsys):
    assert (
        sedsft_main(
            ["export-verl", "--data", str(qa_file), "--output_dir", str(tmp_path), "--val_fraction", "1.5"]
        )
        == 2
    )
    assert "val_fraction must be a finite number in [0, 1)" in capsys.readouterr().err
