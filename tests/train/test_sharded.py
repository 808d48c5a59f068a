"""The fused head on a sharded LM-head weight (FSDP2, DeepSpeed ZeRO-3) equals one unsharded process.

The runs are real: ``fully_shard`` and a ZeRO-3 engine (DeepSpeed's CPU accelerator) on two gloo processes,
each training on its half of the batch, and SEDSFTTrainer under ZeRO-3. accelerate starts FSDP only on
GPUs, so the trainer-level FSDP2 run (and both runs' memory) is a GPU check: ``benchmarks/sharded_head_gpu.sh``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from .sharded_worker import FSDP2_PATCHED, FSDP2_VARIANTS, ZERO3_PATCHED, ZERO3_VARIANTS, model, reference
from .tiny import torchrun
from .worker import train


def _torchrun(out: Path, *args: str, procs: int = 2) -> dict:
    proc = torchrun("tests.train.sharded_worker", str(out), *args, procs=procs, DS_ACCELERATOR="cpu")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(out / f"{args[0]}.pt")


def _assert_same(got: dict, want: dict, start: dict) -> None:
    assert any(not torch.equal(want[k], start[k]) for k in want), "the reference did not move"
    for k, v in want.items():
        torch.testing.assert_close(got[k], v, atol=2e-7, rtol=1e-6, msg=k)


def test_fsdp_two_processes_equal_one(tmp_path):
    result = _torchrun(tmp_path, "fsdp2")
    refs = {tied: reference(tied) for tied in (False, True)}
    for name, (tied, _) in FSDP2_VARIANTS.items():
        # the root FSDP unit stays unsharded after forward by default; a resharded unit leaves a DTensor shard
        assert result[name]["head_after_forward"] == (
            "Parameter" if name == "root_unsharded" else "DTensor"
        ), name
        _assert_same(result[name]["params"], refs[tied], model(tied).state_dict())
    for name, (tied, _) in FSDP2_PATCHED.items():  # sedsft.patch: the loss inside the root's forward
        _assert_same(result[name]["params"], refs[tied], model(tied).state_dict())
    # FSDP1 (use_orig_params=False, head in the root unit): a view of the unsharded flat parameter
    assert result["fsdp1"]["head_after_forward"] == "Tensor"
    _assert_same(result["fsdp1"]["params"], refs[False], model(False).state_dict())


def test_zero3_two_processes_equal_one(tmp_path):
    pytest.importorskip("deepspeed")
    result = _torchrun(tmp_path, "zero3")
    for name, tied in {**ZERO3_VARIANTS, **ZERO3_PATCHED}.items():
        assert result[name]["head_after_forward"] == "empty partition", name  # gathered for the loss only
        assert result[name]["head_after_steps"] == "NOT_AVAILABLE", name  # and partitioned again
        _assert_same(result[name]["params"], reference(tied), model(tied).state_dict())


def test_zero3_trainer_equals_plain(tmp_path, tiny_ckpt, train_file):
    """SEDSFTTrainer under ZeRO-3 keeps the fused head (calibration included) and reaches the plain run's weights."""
    pytest.importorskip("deepspeed")
    (tmp_path / "z3").mkdir()
    got = _torchrun(tmp_path / "z3", "zero3_trainer", str(tiny_ckpt), str(train_file), procs=1)
    plain = train(
        tmp_path / "plain",
        tiny_ckpt,
        train_file,
        per_device=2,
        accum=2,
        steps=2,
        objective="sed",
        loss_impl="fused",
    )
    assert (got["loss_impl"], got["zero_stage"]) == ("fused", 3)
    assert got["tau"] == plain.tau
    assert got["losses"] == pytest.approx(
        [h["loss"] for h in plain.state.log_history if "loss" in h], abs=1e-6
    )
    for k, v in plain.model.state_dict().items():
        torch.testing.assert_close(got["params"][k], v, atol=2e-7, rtol=1e-6, msg=k)


@pytest.mark.parametrize("shard", [torch.zeros(0), torch.zeros(3264)], ids=["empty", "flat"])
def test_a_flat_shard_is_refused_with_the_way_out(shard):
    """FSDP1 with use_orig_params=True (or the head in its own unit) leaves a flat shard where the head is."""
    from sedsft.losses.sharded import full_parameter

    with pytest.raises(ValueError, match="flat shard .* use FSDP2, or FSDP1 with use_orig_params=false"):
        full_parameter(torch.nn.Parameter(shard), dim=2, compute_dtype=torch.float32)
