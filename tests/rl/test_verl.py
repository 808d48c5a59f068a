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


def test_copied_reward_accepts_the_keywords_verl_passes(qa_file, tmp_path):
    out = tmp_path / "verl"
    assert sedsft_main(["export-verl", "--data", str(qa_file), "--output_dir", str(out)]) == 0
    module = _load_module(out / "reward.py")
    score = module.compute_score(
        data_source="sedsft_math",
        solution_str="\\boxed{\\frac{1}{2}}",
        ground_truth="0.5",
        extra_info={"split": "train", "index": 0},
        sandbox_fusion_url=None,
        concurrent_semaphore=None,
        memory_limit_mb=1024,
    )
    assert score == 1.0


def test_reward_from_a_thread_keeps_its_time_limit():
    """verl's reward threads get no alarm: a slow SymPy comparison must still end at the limit."""
    import threading
    import time

    from sedsft.rl.verl_reward import compute_score

    def in_thread(solution: str, gold: str) -> tuple[float, float]:
        out = {}

        def run():
            start = time.perf_counter()
            out["score"] = compute_score("m", solution, gold, None, timeout_s=1.0, grading_workers=1)
            out["seconds"] = time.perf_counter() - start

        t = threading.Thread(target=run)
        t.start()
        t.join(timeout=300)
        assert not t.is_alive(), "the reward thread is stuck"
        return out["score"], out["seconds"]

    assert in_thread("\\boxed{4}", "4")[0] == 1.0  # starts the shared pool (not timed)
    score, seconds = in_thread("\\boxed{9^{9^{9}}} hmm \\boxed{10^{10^{10}}}", "1")
    assert score == 0.0 and seconds < 20  # 1 s limit; without one this runs for many minutes
    assert in_thread("\\boxed{4}", "5")[0] == 0.0  # the pool still works afterwards


def test_a_bad_reward_setting_is_a_user_error():
    from sedsft.errors import UserError
    from sedsft.rl.verl_reward import compute_score

    with pytest.raises(UserError, match="finite"):
        compute_score("m", "\\boxed{4}", "4", timeout_s=float("nan"))
