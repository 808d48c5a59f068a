"""`sedsft eval` end to end: bad input gives one line and a non-zero exit; responses files get graded."""

from __future__ import annotations

import json

import pytest

from sedsft.cli import main


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--model", "/nonexistent/ckpt", "--output_dir", "x"], "not a checkpoint folder"),
        ([], "give --model (to sample and grade) or --responses (to grade a file)"),
        (["--responses", "/nonexistent.jsonl"], "not found"),
        (["--model", "m", "--responses", "r"], "one of them"),
        (["--responses", "r", "--n", "2"], "--n apply to --model runs"),
        (["--model", "m", "--temperature", "nan"], "temperature must be a finite number >= 0, got nan"),
        (["--model", "m", "--n", "0"], "n must be an integer >= 1, got 0"),
        (["--model", "m", "--system_prompt", "x", "--no_system_prompt"], "--system_prompt none"),
        (["--responses", "r", "--limit", "0"], "limit must be an integer >= 1"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(argv, message, capsys):
    assert main(["eval", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_unknown_benchmark_with_a_real_checkpoint(tiny_checkpoint, data_dir, tmp_path, capsys):
    argv = [
        "eval",
        "--model",
        str(tiny_checkpoint),
        "--benchmarks",
        "aime24,mmlu",
        "--data_dir",
        str(data_dir),
    ]
    assert main([*argv, "--output_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown benchmark 'mmlu'" in err


def test_eval_a_tiny_checkpoint_then_rerun_is_a_no_op(tiny_checkpoint, data_dir, tmp_path, capsys):
    argv = [
        "eval",
        "--model",
        str(tiny_checkpoint),
        "--benchmarks",
        "aime24,gsm8k",
        "--data_dir",
        str(data_dir),
    ]
    argv += ["--output_dir", str(tmp_path), "--limit", "2", "--n", "2", "--max_new_tokens", "4"]
    argv += ["--grading_workers", "0", "--no_progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| Model | AIME24 | GSM8K | Avg |" in out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["benchmarks"]) == {"aime24", "gsm8k"}
    assert metrics["benchmarks"]["aime24"]["num_samples"] == 2
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 2 * 2
    assert main(argv) == 0
    assert "this run had finished" in capsys.readouterr().out
    assert (tmp_path / "samples.jsonl").read_text().splitlines() == lines


def test_grade_a_responses_file(tmp_path, capsys):
    rows = [
        {"benchmark": "mine", "problem_id": "1", "response": r"\boxed{4}", "gold": "4"},
        {"benchmark": "mine", "problem_id": "1", "response": r"\boxed{5}", "gold": "4"},
        {"benchmark": "mine", "problem_id": "2", "response": "#### 7", "answer": "7"},
        {"benchmark": "mine", "problem_id": "2", "response": "no idea", "answer": "7"},
    ]
    path = tmp_path / "responses.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert (
        main(
            [
                "eval",
                "--responses",
                str(path),
                "--output_dir",
                str(tmp_path / "out"),
                "--grading_workers",
                "0",
            ]
        )
        == 0
    )
    assert "| responses | 50.0 |" in capsys.readouterr().out
    graded = [json.loads(line) for line in (tmp_path / "out" / "graded.jsonl").read_text().splitlines()]
    assert [g["correct"] for g in graded] == [True, False, True, False]
    assert [g["extracted_answer"] for g in graded] == ["4", "5", "7", None]
    assert (
        json.loads((tmp_path / "out" / "metrics.json").read_text())["benchmarks"]["mine"]["pass_at"]["2"]
        == 1.0
    )  # each problem has one correct sample of two


def test_responses_file_without_gold_is_a_user_error(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"response": "4"}) + "\n")
    assert main(["eval", "--responses", str(path)]) == 2
    assert "r.jsonl:1: needs a 'response' string and a non-empty 'gold'" in capsys.readouterr().err


def _eval_argv(model, data_dir, out, *extra):
    return [
        "eval", "--model", str(model), "--benchmarks", "aime24,gsm8k", "--data_dir", str(data_dir),
        "--output_dir", str(out), "--limit", "3", "--n", "2", "--max_new_tokens", "4", "--batch_size", "2",
        "--grading_workers", "0", "--no_progress", "--backend", "hf", *extra,
    ]  # fmt: skip


def test_another_model_into_a_finished_folder_is_refused(tiny_checkpoint, data_dir, tmp_path, capsys):
    import shutil

    out = tmp_path / "eval"
    assert main(_eval_argv(tiny_checkpoint, data_dir, out)) == 0
    other = tmp_path / "model_b"
    shutil.copytree(tiny_checkpoint, other)
    (other / "generation_config.json").write_text('{"do_sample": true}')  # another model: other files
    capsys.readouterr()
    assert main(_eval_argv(other, data_dir, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds another run (model " in err[0] and "model_b" in err[0], err
    assert main(_eval_argv(tiny_checkpoint, data_dir, out, "--seed", "1")) == 2
    assert "seed 0 -> 1" in capsys.readouterr().err


def test_eval_resumed_after_a_torn_batch_equals_an_uninterrupted_run(
    tiny_checkpoint, data_dir, tmp_path, monkeypatch
):
    from ..interrupts import kill_mid_write

    whole, torn = tmp_path / "whole", tmp_path / "torn"
    assert main(_eval_argv(tiny_checkpoint, data_dir, whole)) == 0
    kill_mid_write(monkeypatch, at_write=3)  # the 3rd batch: one sample line, half of the next, then the kill
    assert main(_eval_argv(tiny_checkpoint, data_dir, torn)) == 130
    monkeypatch.undo()
    assert main(_eval_argv(tiny_checkpoint, data_dir, torn)) == 0

    def samples(folder):
        rows = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]
        return sorted(rows, key=lambda r: (r["benchmark"], r["problem_id"], r["sample_index"]))

    assert samples(torn) == samples(whole) and len(samples(whole)) == 12
    assert (torn / "metrics.json").read_text() == (whole / "metrics.json").read_text()


def _write(path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def test_a_broken_line_in_a_responses_file_is_reported_not_dropped(tmp_path, capsys):
    good = json.dumps({"response": r"\boxed{4}", "gold": "4"})
    path = _write(tmp_path / "r.jsonl", [good] * 6 + ['{"response": "\\boxed{4}", "gold": '])
    assert main(["eval", "--responses", path, "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "r.jsonl:7" in err and "fix or remove" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "record,message",
    [
        ({"response": r"\boxed{4}", "gold": "4", "sample_index": "x"}, "sample_index"),
        ({"response": 42, "gold": "4"}, "needs a 'response' string"),
        ({"response": "4", "gold": None}, "non-empty 'gold'"),
    ],
)
def test_bad_responses_records_name_file_line_and_field(tmp_path, capsys, record, message):
    path = _write(tmp_path / "r.jsonl", [json.dumps({"response": "1", "gold": "1"}), json.dumps(record)])
    assert main(["eval", "--responses", path, "--grading_workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "r.jsonl:2" in err and message in err


def test_responses_with_lone_surrogates_are_graded_and_written(tmp_path, capsys):
    rows = [
        {"response": "\\boxed{4} \udc80", "gold": "4", "answer": 4},
        {"response": "junk \udc80 no answer", "gold": 7},  # a number as the gold is fine
    ]
    path = _write(tmp_path / "r.jsonl", [json.dumps(r) for r in rows])  # escaped in the file: valid JSON
    out = tmp_path / "out"
    assert main(["eval", "--responses", path, "--output_dir", str(out), "--grading_workers", "0"]) == 0
    assert "| r | 50.0 |" in capsys.readouterr().out
    graded = [json.loads(line) for line in (out / "graded.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [g["response"] for g in graded] == [r["response"] for r in rows]  # the escape reads back
    assert [g["correct"] for g in graded] == [True, False] and graded[1]["gold"] == "7"


def test_nan_grading_timeout_is_a_one_line_error(tmp_path, capsys):
    path = _write(tmp_path / "r.jsonl", [json.dumps({"response": "1", "gold": "1"})])
    assert main(["eval", "--responses", path, "--grading_timeout", "nan"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "finite" in err


@pytest.mark.parametrize("workers", ["0", "1"])
def test_grading_protocol_reaches_the_grader(tmp_path, capsys, workers):
    """--grading_protocol qwen restores Qwen2.5-Math's extraction, in this process and in grading workers."""
    from tests.eval.test_grading import QWEN_DIFFERS

    rows = [
        {"benchmark": "mine", "problem_id": str(i), "response": response, "gold": gold}
        for i, (gold, response, _, _) in enumerate(QWEN_DIFFERS)
    ]
    path = tmp_path / "responses.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    verdicts = {}
    for protocol in ("sedsft", "qwen"):
        out = tmp_path / protocol
        argv = ["eval", "--responses", str(path), "--output_dir", str(out), "--grading_workers", workers]
        assert main([*argv, "--grading_protocol", protocol]) == 0
        graded = [json.loads(line) for line in (out / "graded.jsonl").read_text().splitlines()]
        verdicts[protocol] = [g["correct"] for g in graded]
    assert verdicts == {"sedsft": [d[2] for d in QWEN_DIFFERS], "qwen": [d[3] for d in QWEN_DIFFERS]}
    capsys.readouterr()
    assert main(["eval", "--responses", str(path), "--grading_protocol", "minerva"]) == 2
    assert "grading_protocol" in capsys.readouterr().err
