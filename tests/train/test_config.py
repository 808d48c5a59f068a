"""SEDSFTConfig's objective options come from the registry; calibration options resolve to one rule."""

from __future__ import annotations

import dataclasses
import math

import pytest

from sedsft.calibrate import CalibrationSpec
from sedsft.errors import UserError
from sedsft.losses import OBJECTIVES
from sedsft.train import SEDSFTConfig

BASE = dict(output_dir="unused", use_cpu=True, bf16=False, report_to="none")


def config(**kw) -> SEDSFTConfig:
    return SEDSFTConfig(**{**BASE, **kw})


def test_every_registry_option_is_one_field_with_its_default_and_help():
    fields = {f.name: f for f in dataclasses.fields(SEDSFTConfig)}
    for obj in OBJECTIVES.values():
        fixed = dict(obj.fixed)
        for opt in dataclasses.fields(obj.options_cls):
            if opt.name in fixed:
                continue
            f = fields[opt.metadata.get("flag", opt.name)]
            assert opt.metadata["help"] in f.metadata["help"] and obj.name in f.metadata["help"]
            assert f.default == (None if opt.default is dataclasses.MISSING else opt.default)
    assert fields["gem_h"].metadata["choices"] == ["linear", "logsigmoid"]
    assert fields["objective"].metadata["choices"] == list(OBJECTIVES)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"objective": "ce", "lam": 2.0}, r"--lam does not apply to objective 'ce'"),
        ({"objective": "sed_nomask", "tau": 0.5}, r"--tau does not apply to objective 'sed_nomask'"),
        ({"objective": "gem", "gem_beta": 0.0}, r"--gem_beta: beta must be a finite number > 0"),
        ({"top_k": 0}, r"--top_k: top_k must be an integer >= 1"),
        ({"tau": math.nan}, r"tau must be a finite number"),
        ({"tau": -0.1}, r"tau must be a finite number >= 0"),
        ({"tau": 0.5, "mask_ratio": 0.7}, r"give --tau .* or --mask_ratio .* not both"),
        ({"tau": 0.5, "calibration_preset": "authors"}, r"--calibration_preset .* not both"),
        ({"mask_ratio": 1.5}, r"mask_ratio must be a finite number in \[0, 1\]"),
        ({"calibration_examples": 0}, r"calibration_examples must be an integer >= 1"),
        ({"calibration_preset": "theirs"}, r"calibration_preset must be one of paper, authors"),
    ],
)
def test_bad_options_are_one_line_errors(kw, message):
    with pytest.raises(UserError, match=message):
        config(**kw)


def test_calibration_rule_from_preset_and_fields():
    assert config().calibration_spec(top_k=2, seed=42) == CalibrationSpec(top_k=2, mask_ratio=0.7)
    c = config(calibration_preset="authors", top_k=3, seed=5)
    spec = c.calibration_spec(top_k=c.top_k, seed=c.seed)
    assert (spec.top_k, spec.examples, spec.positions, spec.statistic, spec.seed) == (
        10,
        100,
        "all",
        "order",
        5,
    )
    assert c.objective_options(tau=0.9) == {"tau": 0.9, "top_k": 3, "lam": 1.0}  # the mask keeps k = 3
    c = config(calibration_preset="authors", calibration_top_k=3, calibration_examples=20)
    assert c.calibration_spec(top_k=2, seed=0).top_k == 3
    assert config(objective="ce", mask_ratio=0.3).objective_options() == {"top_k": 2}  # ignored without tau


def test_the_command_line_takes_the_preset():
    from sedsft.train.cli import build_parser

    argv = ["--output_dir", "x", "--use_cpu", "--calibration_preset", "authors", "--calibration_top_k", "4"]
    args = build_parser().parse(argv)[0]
    assert args.calibration_preset == "authors" and args.calibration_spec(top_k=2, seed=1).top_k == 4
