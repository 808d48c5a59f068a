"""SEDSFTTrainer on a tiny random Llama (CPU): every objective on both loss paths, exact gradient
accumulation, two processes vs one, resume without recalibration."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sedsft.losses import OBJECTIVES
from sedsft.train import METRICS_FILE

from .tiny import torchrun
from .worker import train

STATS = ("mask_rate", "de_penalty", "gold_prob", "entropy", "topk_mass", "top1_acc")
CASES = [(o, impl) for o in OBJECTIVES for impl in ("fused", "logits")]


def _params(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("objective, impl", CASES)
def test_steps_log_and_accumulate_exactly(tmp_path, tiny_ckpt, train_file, objective, impl):
    """8x1 and 2x4 (accumulation) give the same loss and the same SGD update; stats are logged and finite."""
    from transformers import AutoModelForCausalLM

    start = AutoModelForCausalLM.from_pretrained(tiny_ckpt, local_files_only=True).state_dict()
    one = train(
        tmp_path / "a",
        tiny_ckpt,
        train_file,
        per_device=8,
        accum=1,
        steps=2,
        objective=objective,
        loss_impl=impl,
    )
    acc = train(
        tmp_path / "b",
        tiny_ckpt,
        train_file,
        per_device=2,
        accum=4,
        steps=2,
        objective=objective,
        loss_impl=impl,
    )
    assert one.loss_impl == impl
    p1, p2 = _params(one), _params(acc)
    assert any(not torch.equal(p1[k], start[k]) for k in start), "parameters did not change"
    for k in p1:
        torch.testing.assert_close(p1[k], p2[k], atol=2e-6, rtol=1e-5, msg=k)
    logs1 = [h for h in one.state.log_history if "loss" in h]
    logs2 = [h for h in acc.state.log_history if "loss" in h]
    assert len(logs1) == 2
    for h1, h2 in zip(logs1, logs2, strict=True):
        assert h1["loss"] == pytest.approx(h2["loss"], abs=1e-5)
        for s in STATS:
            assert math.isfinite(h1[s]) and h1[s] == pytest.approx(h2[s], abs=1e-6), s
    if objective == "sed":
        assert 0.0 < logs1[0]["mask_rate"] < 1.0 and one.tau == acc.tau
        assert json.loads((tmp_path / "a" / "sedsft_calibration.json").read_text())["tau"] == one.tau
    lines = (tmp_path / "a" / METRICS_FILE).read_text().splitlines()
    assert [json.loads(x).get("loss") for x in lines[:2]] == [h["loss"] for h in logs1]


def test_pinned_first_losses(tmp_path, tiny_ckpt, train_file):
    """The first logged loss of CE on the fixed tiny model (a regression pin; ln(102) = 4.625 for a uniform model)."""
    t = train(tmp_path, tiny_ckpt, train_file, per_device=8, accum=1, steps=1, objective="ce")
    assert t.state.log_history[0]["loss"] == pytest.approx(4.63, abs=0.05)


def test_two_processes_match_one(tmp_path, tiny_ckpt, train_file):
    """torchrun, 2 processes (gloo) x 1 sequence x 2 accumulation == 1 process x 4 sequences; same tau on both ranks."""
    (tmp_path / "ddp").mkdir()
    args = [str(tmp_path / "ddp"), str(tiny_ckpt), str(train_file), "1", "2", "2", "sed"]
    proc = torchrun("tests.train.worker", *args, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / "ddp" / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == 2 and r0["tau"] == r1["tau"]
    single = train(tmp_path / "one", tiny_ckpt, train_file, per_device=4, accum=1, steps=2, objective="sed")
    # whole calibration batches are dealt out: the same values on any number of processes
    assert single.tau == r0["tau"]
    losses = [h["loss"] for h in single.state.log_history if "loss" in h]
    assert r0["losses"] == pytest.approx(losses, abs=1e-5)
    ddp = torch.load(tmp_path / "ddp" / "params.pt")
    for k, v in _params(single).items():
        torch.testing.assert_close(ddp[k], v, atol=2e-6, rtol=1e-5, msg=k)


def test_resume_reaches_the_same_parameters_without_recalibrating(
    tmp_path, tiny_ckpt, train_file, monkeypatch
):
    kw = dict(per_device=4, accum=1, steps=4, objective="sed", optim="adamw_torch", learning_rate=1e-2)
    full = train(tmp_path / "full", tiny_ckpt, train_file, **kw)
    part = train(
        tmp_path / "part", tiny_ckpt, train_file, **{**kw, "save_strategy": "steps", "save_steps": 2}
    )
    ckpt = tmp_path / "part" / "checkpoint-2"
    assert json.loads((ckpt / "sedsft_calibration.json").read_text())["tau"] == full.tau == part.tau

    from sedsft.train import SEDSFTTrainer

    def no_recalibration(self, model):
        raise AssertionError("tau was recalibrated on resume")

    monkeypatch.setattr(SEDSFTTrainer, "calibrate", no_recalibration)
    resumed = train(tmp_path / "part", tiny_ckpt, train_file, **kw, resume_from_checkpoint=str(ckpt))
    assert resumed.tau == full.tau
    for k, v in _params(full).items():
        torch.testing.assert_close(_params(resumed)[k], v, atol=1e-6, rtol=1e-5, msg=k)
