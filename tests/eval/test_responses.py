"""A --responses file that gives one (problem, sample) twice is refused with its file and line."""

from __future__ import annotations

import json

import pytest

from sedsft.cli import main


def _record(**fields) -> str:
    return json.dumps({"response": "so \\boxed{2}", "gold": "2", **fields})


# each file's second record repeats the first one's (benchmark, problem, sample), spelled differently
DUPLICATES = {
    "same record twice": ([_record(problem_id=1, sample_index=0)] * 2, "sample 0 of problem responses/1"),
    "id as number and string": (
        [_record(problem_id=7, sample_index=1), _record(problem_id="7", sample_index=1)],
        "sample 1 of problem responses/7",
    ),
    "id and problem_id": (
        [_record(id="a"), _record(problem_id="a", sample_index=0)],
        "sample 0 of problem responses/a",
    ),
    "explicit benchmark": (
        [_record(benchmark="math", problem_id=3), _record(benchmark="math", problem_id=3, sample_index=0)],
        "sample 0 of problem math/3",
    ),
}


@pytest.mark.parametrize("case", list(DUPLICATES))
def test_a_sample_given_twice_is_refused_with_file_and_line(tmp_path, capsys, case):
    lines, what = DUPLICATES[case]
    path = tmp_path / "responses.jsonl"
    path.write_text("\n".join([_record(problem_id="other"), *lines]) + "\n")
    out = tmp_path / "out"
    assert main(["eval", "--responses", str(path), "--output_dir", str(out), "--grading_workers", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"sedsft eval: error: responses.jsonl:3: {what} appears twice; give each its own"]
    assert not out.exists()  # refused before any folder is touched


def test_samples_of_one_problem_without_indexes_are_counted_once_each(tmp_path):
    from sedsft.eval.responses import grade_responses, read_responses

    path = tmp_path / "responses.jsonl"
    path.write_text("\n".join([_record(problem_id=1), _record(problem_id=1, response="\\boxed{3}")]) + "\n")
    by_bench = read_responses(path)
    assert [r["sample_index"] for r in by_bench["responses"]] == [0, 1]
    metrics = grade_responses(by_bench, workers=0).metrics["responses"]
    assert metrics.num_problems == 1 and metrics.num_samples == 2 and metrics.accuracy == pytest.approx(0.5)
