"""Offline filtering keeps exactly the prompts with 0 < solve rate < 1, and resumes without resampling."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from sedsft.eval.generation import Sample
from sedsft.rl.filter import FilterConfig, filter_prompts
from sedsft.rl.filter_cli import write_same_layout
from sedsft.rl.prompts import rl_prompts_from_records

from .tiny import QA_ROWS, build_char_tokenizer

# Known samples per question: solve rates 1, 1/2, 0, 1/4 with n = 4.
OUTPUTS = {
    "1+1?": ["\\boxed{2}"] * 4,
    "2+2?": ["\\boxed{4}", "\\boxed{5}", "\\boxed{4}", "no idea"],
    "3+3?": ["\\boxed{7}"] * 4,
    "4+4?": ["\\boxed{8}", "\\boxed{9}", "\\boxed{9}", "\\boxed{}"],
}


class StubBackend:
    """Returns OUTPUTS for each rendered prompt; records which questions it was asked to sample."""

    def __init__(self, fail_after_calls: int | None = None):
        self.tokenizer = build_char_tokenizer()
        self.asked: list[str] = []
        self.fail_after_calls = fail_after_calls
        self.calls = 0

    def generate(self, prompts, cfg):
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise KeyboardInterrupt  # the job is killed between two batches
        self.calls += 1
        out = []
        for text in prompts:
            question = next(q for q in OUTPUTS if q in text)
            self.asked.append(question)
            out.append([Sample(r, len(r)) for r in OUTPUTS[question][: cfg.n]])
        return out


@pytest.fixture()
def prompts():
    return rl_prompts_from_records(QA_ROWS + [{"question": "5+5?"}])  # the last one has no gold


def test_keeps_exactly_the_mixed_prompts(prompts):
    result = filter_prompts(prompts, StubBackend(), config=FilterConfig(n=4))
    assert result.solve_rates == [1.0, 0.5, 0.0, 0.25, None]
    assert result.kept == [1, 3]
    assert result.summary()["always_solved"] == 1 and result.summary()["never_solved"] == 1
    assert result.summary()["no_gold"] == 1


def test_custom_grader_and_bounds(prompts):
    # A grader that accepts anything boxed and non-empty: every gold prompt but 4+4 is always solved.
    result = filter_prompts(
        prompts,
        StubBackend(),
        config=FilterConfig(n=4, max_rate=0.9),
        grader=lambda response, gold: "\\boxed{" in response and "\\boxed{}" not in response,
    )
    assert result.solve_rates[:4] == [1.0, 0.75, 1.0, 0.75] and result.kept == [1, 3]


def test_resume_does_not_resample(prompts, tmp_path):
    log = tmp_path / "solve_rates.jsonl"
    first = StubBackend(fail_after_calls=1)
    with pytest.raises(KeyboardInterrupt):
        filter_prompts(prompts, first, config=FilterConfig(n=4, batch_prompts=2), log_path=log)
    assert first.asked == ["1+1?", "2+2?"]
    assert [r["index"] for r in map(json.loads, log.read_text().splitlines())] == [0, 1]

    second = StubBackend()
    result = filter_prompts(prompts, second, config=FilterConfig(n=4, batch_prompts=2), log_path=log)
    assert second.asked == ["3+3?", "4+4?"]  # finished prompts are not sampled again
    assert result.kept == [1, 3] and (result.num_resumed, result.num_sampled) == (2, 2)

    third = StubBackend()
    assert filter_prompts(prompts, third, config=FilterConfig(n=4, batch_prompts=2), log_path=log).kept == [
        1,
        3,
    ]
    assert third.asked == []
    with pytest.raises(ValueError, match="written with n=4"):
        filter_prompts(prompts, StubBackend(), config=FilterConfig(n=8), log_path=log)


def test_kept_records_keep_their_layout(tmp_path):
    src = tmp_path / "in.parquet"
    import pyarrow as pa

    rows = [
        {"prompt": [{"role": "user", "content": "q"}], "reward_model": {"ground_truth": "1", "style": "rule"}}
    ]
    pq.write_table(pa.Table.from_pylist(rows), src)
    path = write_same_layout([{**rows[0], "_source": "in.parquet:1"}], src, tmp_path / "out")
    assert path.name == "kept.parquet" and pq.read_table(path).to_pylist() == rows
