"""evaluate(): samples are reproducible from the seed, an interrupted run resumes to the same metrics."""

from __future__ import annotations

import json

import pytest

from sedsft.errors import UserError
from sedsft.eval.benchmarks import Problem
from sedsft.eval.generation import HFBackend, SamplingConfig
from sedsft.eval.runner import evaluate

CFG = SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=8, n=3, seed=7)


def _problems(k: int = 5) -> dict[str, list[Problem]]:
    return {
        "toy_a": [Problem(f"a{i}", f"What is {i} + 1?", str(i + 1), "toy_a") for i in range(k)],
        "toy_b": [Problem(f"b{i}", f"Double {i}.", str(2 * i), "toy_b") for i in range(2)],
    }


def _contains_digit(response: str, gold: str) -> bool:  # a module-level grader: picklable for workers
    return any(c.isdigit() for c in response)


class _Crash(RuntimeError):
    pass


class _CrashAfter:
    """A backend that dies after a number of generate calls, like a run killed mid-benchmark."""

    def __init__(self, inner, calls: int):
        self.inner, self.calls, self.tokenizer = inner, calls, inner.tokenizer

    def generate(self, prompts, cfg):
        if self.calls == 0:
            raise _Crash("killed")
        self.calls -= 1
        return self.inner.generate(prompts, cfg)


def _strip(records):
    return [
        {k: v for k, v in r.items() if k != "mean_entropy"} | {"e": round(r["mean_entropy"], 5)}
        for r in records
    ]


@pytest.fixture()
def backend(tiny_chat_model):
    model, tok = tiny_chat_model
    return HFBackend(model, tok, batch_size=4)


def test_backend_gives_n_samples_with_tokens_and_entropy(backend):
    out = backend.generate(["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"] * 2, CFG)
    assert [len(s) for s in out] == [3, 3]
    for s in out[0]:
        assert 1 <= s.num_tokens <= 8 and s.mean_entropy is not None and s.mean_entropy > 0


def test_same_seed_same_metrics_and_samples(backend):
    first = evaluate(backend, _problems(), sampling=CFG, batch_size=2)
    second = evaluate(backend, _problems(), sampling=CFG, batch_size=2)
    assert _strip(first.records) == _strip(second.records)
    assert first.to_dict() == second.to_dict()
    other = evaluate(
        backend, _problems(), sampling=SamplingConfig(**{**CFG.__dict__, "seed": 8}), batch_size=2
    )
    assert [r["response"] for r in other.records] != [r["response"] for r in first.records]


def test_resume_after_interruption_reaches_identical_metrics(backend, tmp_path):
    clean = evaluate(backend, _problems(), sampling=CFG, batch_size=2, output_dir=tmp_path / "clean")
    run = tmp_path / "run"
    with pytest.raises(_Crash):
        evaluate(_CrashAfter(backend, 2), _problems(), sampling=CFG, batch_size=2, output_dir=run)
    logged = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(logged) == 2 * 2 * CFG.n  # two finished batches of two problems
    with open(run / "samples.jsonl", "a") as f:  # a torn line from a writer killed mid-record
        f.write('{"benchmark": "toy_a", "probl')
    resumed = evaluate(backend, _problems(), sampling=CFG, batch_size=2, output_dir=run)
    assert resumed.to_dict() == clean.to_dict()
    assert _strip(resumed.records) == _strip(clean.records)
    assert json.loads((run / "metrics.json").read_text()) == json.loads(
        (tmp_path / "clean" / "metrics.json").read_text()
    )
    # finished: nothing is generated again, not even a model is needed
    again = evaluate(
        None, _problems(), sampling=CFG, batch_size=2, output_dir=run, tokenizer=backend.tokenizer
    )
    assert again.to_dict() == clean.to_dict()


def test_other_settings_in_the_same_folder_are_refused(backend, tmp_path):
    evaluate(backend, _problems(1), sampling=CFG, batch_size=2, output_dir=tmp_path)
    with pytest.raises(UserError, match=r"holds another run \(batch_size 2 -> 3\)"):
        evaluate(backend, _problems(1), sampling=CFG, batch_size=3, output_dir=tmp_path)


def test_pluggable_grader_in_worker_processes(backend):
    result = evaluate(
        backend,
        _problems(2),
        sampling=CFG,
        graders={"toy_a": _contains_digit},
        grading_workers=1,
        batch_size=2,
    )
    expected = [any(c.isdigit() for c in r["response"]) for r in result.records if r["benchmark"] == "toy_a"]
    assert [r["correct"] for r in result.records if r["benchmark"] == "toy_a"] == expected
    m = result.metrics["toy_a"]
    assert m.num_samples == 3 and set(m.pass_at) == {1, 2, 3} and m.self_bleu is not None
    assert "| Model | toy_a | toy_b | Avg |" in result.markdown


def test_missing_sampling_for_a_benchmark_is_a_user_error(backend):
    with pytest.raises(UserError, match="toy_b"):
        evaluate(backend, _problems(1), sampling={"toy_a": CFG})
    with pytest.raises(UserError, match="paper protocol"):
        evaluate(backend, _problems(1))


def _explode(response: str, gold: str) -> bool:  # module level: picklable for workers
    raise OverflowError("integer division result too large for a float")


@pytest.mark.parametrize("workers", [0, 1])
def test_a_grading_error_is_recorded_and_the_run_goes_on(backend, tmp_path, workers):
    kwargs = dict(sampling=CFG, batch_size=2, graders={"toy_a": _explode}, grading_workers=workers)
    result = evaluate(backend, _problems(2), output_dir=tmp_path, **kwargs)
    toy_a = [r for r in result.records if r["benchmark"] == "toy_a"]
    assert toy_a and all(not r["correct"] and r["grading_error"].startswith("OverflowError") for r in toy_a)
    assert all(r["grading_error"] is None for r in result.records if r["benchmark"] == "toy_b")
    assert result.metrics["toy_a"].accuracy == 0.0
    assert "| model | 0.0 |" in (tmp_path / "results.md").read_text()  # a zero accuracy prints as 0.0
    again = evaluate(backend, _problems(2), output_dir=tmp_path, **kwargs)  # the rerun reads it back
    assert again.to_dict() == result.to_dict()


def test_meaningless_grading_timeout_is_refused_before_anything_is_written(backend, tmp_path):
    with pytest.raises(UserError, match="finite"):
        evaluate(backend, _problems(1), sampling=CFG, output_dir=tmp_path, grading_timeout_s=float("nan"))
    assert not any(tmp_path.iterdir())
