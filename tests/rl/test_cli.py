"""``sedsft filter`` and ``sedsft export-verl`` on real files: run folders, exact resume, one-line errors."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from sedsft.cli import main as sedsft_main

from ..interrupts import kill_mid_write


def _filter_argv(ckpt, data, out, *extra):
    return [
        "filter", "--model", str(ckpt), "--data", str(data), "--output_dir", str(out), "--n", "2",
        "--max_new_tokens", "6", "--grading_workers", "0", "--no_progress", "--backend", "hf", *extra,
    ]  # fmt: skip


def test_filter_runs_then_a_rerun_reports_the_finished_run(tiny_checkpoint, qa_file, tmp_path, capsys):
    out = tmp_path / "filter"
    argv = _filter_argv(tiny_checkpoint, qa_file, out)
    assert sedsft_main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prompts"] == 4 and summary["sampled_now"] == 4
    assert len((out / "solve_rates.jsonl").read_text().splitlines()) == 4
    log = (out / "solve_rates.jsonl").read_bytes()
    capsys.readouterr()
    assert sedsft_main(argv) == 0
    assert "this run had finished" in capsys.readouterr().out
    assert (out / "solve_rates.jsonl").read_bytes() == log
    assert sedsft_main([*argv[:-2], "--temperature", "0.5", "--backend", "hf"]) == 2
    assert "holds another run (temperature 1.0 -> 0.5)" in capsys.readouterr().err


def test_filter_resumed_after_a_torn_batch_equals_an_uninterrupted_run(
    tiny_checkpoint, tmp_path, monkeypatch, capsys
):
    data = tmp_path / "prompts.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"{i}+{i}?", "answer": str(2 * i)}) + "\n" for i in range(9))
    )
    extra = ("--batch_prompts", "3", "--save_responses", "--temperature", "1.0")
    whole, torn = tmp_path / "whole", tmp_path / "torn"
    assert sedsft_main(_filter_argv(tiny_checkpoint, data, whole, *extra)) == 0

    kill_mid_write(monkeypatch, at_write=2)  # the 2nd batch: one whole line, half of the next, then the kill
    assert sedsft_main(_filter_argv(tiny_checkpoint, data, torn, *extra)) == 130
    monkeypatch.undo()
    assert len((torn / "solve_rates.jsonl").read_text().splitlines()) == 5  # 3 + 1 + a torn half line
    assert sedsft_main(_filter_argv(tiny_checkpoint, data, torn, *extra)) == 0

    def by_key(folder):
        return {r["key"]: r for r in map(json.loads, (folder / "solve_rates.jsonl").read_text().splitlines())}

    assert by_key(torn) == by_key(whole) and len(by_key(whole)) == 9
    a, b = (json.loads((d / "summary.json").read_text()) for d in (whole, torn))
    assert {k: v for k, v in a.items() if k not in ("sampled_now", "resumed")} == {
        k: v for k, v in b.items() if k not in ("sampled_now", "resumed")
    }


def test_export_verl_refuses_to_mix_exports(tmp_path, qa_file, capsys):
    out = tmp_path / "verl"
    assert (
        sedsft_main(
            ["export-verl", "--data", str(qa_file), "--output_dir", str(out), "--val_fraction", "0.25"]
        )
        == 0
    )
    assert (out / "validation.parquet").is_file()
    assert sedsft_main(["export-verl", "--data", str(qa_file), "--output_dir", str(out)]) == 2
    assert "holds another run (val_fraction 0.25 -> 0.0)" in capsys.readouterr().err
    assert sedsft_main(["export-verl", "--data", str(qa_file), "--output_dir", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["reward.py", "sedsft_run.json", "train.parquet"]
    assert pq.read_table(out / "train.parquet").num_rows == 4


def test_filter_into_a_foreign_folder_is_refused(tiny_checkpoint, qa_file, tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    shutil.copy(qa_file, out / "notes.jsonl")
    assert sedsft_main(_filter_argv(tiny_checkpoint, qa_file, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not empty (notes.jsonl, ...) and holds no sedsft run" in err[0]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--num_generations", "0"], "unknown option --num_generations"),
        (["--n", "0"], "n must be an integer >= 1, got 0"),
        (["--temperature", "nan"], "temperature must be a finite number >= 0, got nan"),
        (["--top_p", "0"], "top_p must be a finite number in (0, 1], got 0.0"),
        (["--min_rate", "0.5", "--max_rate", "0.5"], "min_rate < max_rate"),
        (["--grading_timeout", "nan"], "grading_timeout must be a finite number > 0"),
        (["--limit", "0"], "limit must be an integer >= 1"),
        (
            ["--system_prompt", "x", "--no_system_prompt"],
            "--no_system_prompt is not an option any more: use --system_prompt none",
        ),
        (["--device", "cuda:7"], "--device cuda:7"),
    ],
)
def test_filter_bad_options_are_one_line(tmp_path, qa_file, capsys, extra, message):
    import torch

    if "cuda:7" in extra and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    argv = ["filter", "--model", str(tmp_path), "--data", str(qa_file), "--output_dir", str(tmp_path / "o")]
    assert sedsft_main([*argv, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sedsft filter: error: ") and message in err[0], err
    assert not (tmp_path / "o").exists()  # refused before anything is written
