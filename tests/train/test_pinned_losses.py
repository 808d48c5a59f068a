"""Pinned numbers, as torchtune's recipe tests do: the first training losses of every objective.

SEDSFTTrainer on the fixed tiny model and data (tests/train/tiny.py, seed 0, SGD lr 0.5, 4 sequences per
step, fp32 on CPU). Both loss paths must reproduce the same pins: the logits path and the fused engine.
The values were recorded when this test was written; a change in any objective, in the
engine, in the data pipeline or in the calibration moves them. A first loss near ln(102) = 4.625 (the
uniform model over the 102-token vocabulary) is the sanity anchor for CE.
"""

from __future__ import annotations

import pytest

from sedsft.errors import UserError
from sedsft.train import SEDSFTConfig

from .worker import train

PINNED = {  # objective -> the logged losses of steps 1..3
    "ce": [4.649798393249512, 4.06500768661499, 3.017212390899658],
    "dft": [0.044572871178388596, 0.045457880944013596, 0.04540347307920456],
    "gem": [0.03707591071724892, -0.5281325578689575, -0.8729543089866638],
    "sed": [4.717041015625, 4.064228534698486, 3.0142037868499756],
    "sed_nomask": [4.89028787612915, 4.295173168182373, 3.1876978874206543],
}
PINNED_TAU = 0.024981852620840073  # SED's calibrated tau on the same sample (r = 0.7, k = 2)


@pytest.mark.parametrize("loss_impl", ["fused", "logits"])
@pytest.mark.parametrize("objective", list(PINNED))
def test_first_losses_are_pinned(tmp_path, tiny_ckpt, train_file, objective, loss_impl):
    t = train(
        tmp_path,
        tiny_ckpt,
        train_file,
        per_device=4,
        accum=1,
        steps=3,
        objective=objective,
        loss_impl=loss_impl,
    )
    assert t.loss_impl == loss_impl
    logged = [h["loss"] for h in t.state.log_history if "loss" in h]
    assert logged == pytest.approx(PINNED[objective], abs=1e-4)
    if objective == "sed":
        assert t.tau == pytest.approx(PINNED_TAU, rel=1e-5)


def test_triton_engine_reproduces_the_pins(tmp_path, tiny_ckpt, train_file, monkeypatch):
    """--fused_impl triton (Triton's interpreter on CPU; tests/conftest.py sets TRITON_INTERPRET=1)."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    t = train(
        tmp_path, tiny_ckpt, train_file, per_device=4, accum=1, steps=2, objective="sed", fused_impl="triton"
    )
    logged = [h["loss"] for h in t.state.log_history if "loss" in h]
    assert logged == pytest.approx(PINNED["sed"][:2], abs=1e-4)


def test_fused_impl_is_validated(tmp_path):
    with pytest.raises(UserError, match="--fused_impl must be one of"):
        SEDSFTConfig(
            output_dir=str(tmp_path), objective="ce", fused_impl="cuda", use_cpu=True, report_to="none"
        )
