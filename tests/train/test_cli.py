"""``sedsft sft`` / ``sedsft calibrate`` end to end on the tiny checkpoint, bad inputs, and the paper configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sedsft.cli import main as sedsft_main
from sedsft.losses import OBJECTIVES

from ..real_cli import one_error_line, run_sedsft

ROOT = Path(__file__).resolve().parents[2]


def _tiny_config(tmp_path, ckpt, data, objective) -> Path:
    cfg = tmp_path / f"tiny_{objective}.yaml"
    cfg.write_text(
        f"model_name_or_path: {ckpt}\ndataset_path: {data}\noutput_dir: {tmp_path / objective}\n"
        f"objective: {objective}\nmax_steps: 2\nper_device_train_batch_size: 4\nlogging_steps: 1\n"
        "save_strategy: 'no'\nreport_to: none\nuse_cpu: true\nbf16: false\nmax_length: 128\n"
        "calibration_examples: 8\ndisable_tqdm: true\n"
    )
    return cfg


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_sft_from_config_each_objective(tmp_path, tiny_ckpt, train_file, objective):
    cfg = _tiny_config(tmp_path, tiny_ckpt, train_file, objective)
    assert sedsft_main(["sft", "--config", str(cfg), "--learning_rate", "1e-3"]) == 0
    out = tmp_path / objective
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    rows = [json.loads(x) for x in (out / "sedsft_metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert len(steps) == 2 and all("mask_rate" in r and "entropy" in r for r in steps)
    summary = json.loads((out / "sedsft_summary.json").read_text())
    assert summary["objective"] == objective and summary["data"]["examples"] == 16
    assert (out / "sedsft_calibration.json").exists() == (objective == "sed")


BAD = {
    "broken line": (
        '{"question": "q", "response": "r"}\n{"question": "q", \n',
        [],
        r"train.jsonl:2: broken JSON",
    ),
    "missing field": ('{"question": "q", "reply": "r"}\n', [], r"train.jsonl:1: no prompt/response fields"),
    "empty file": ("", [], r"is empty"),
    "no such path": (None, [], r"does not exist"),
    "bad option": ('{"question": "q", "response": "r"}\n', ["--lam", "-1"], r"lam must be"),
    "option of another objective": (
        '{"question": "q", "response": "r"}\n',
        ["--objective", "ce", "--lam", "2"],
        r"--lam does not apply to objective 'ce'",
    ),
    "unknown objective": ('{"question": "q", "response": "r"}\n', ["--objective", "sft"], r"invalid choice"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_inputs_give_one_line(tmp_path, tiny_ckpt, capsys, case):
    content, extra, match = BAD[case]
    data = tmp_path / "train.jsonl"
    if content is not None:
        data.write_text(content)
    argv = [
        "sft",
        "--model_name_or_path",
        str(tiny_ckpt),
        "--dataset_path",
        str(data),
        "--output_dir",
        str(tmp_path / "out"),
        "--use_cpu",
        "--bf16",
        "false",
        *extra,
    ]
    assert sedsft_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sedsft sft: error:"), err
    assert pytest.importorskip("re").search(match, err[0]), err[0]


def test_broken_jsonl_in_a_real_process(tmp_path, tiny_ckpt):
    data = tmp_path / "train.jsonl"
    data.write_text('{"question": "q", "response": "r"}\nnot json\n')
    argv = [
        "sft",
        "--model",
        str(tiny_ckpt),
        "--data",
        str(data),
        "--output_dir",
        str(tmp_path / "out"),
        "--use_cpu",
    ]
    line = one_error_line(run_sedsft(*argv), "sft")
    assert (
        line
        == f"sedsft sft: error: {data}:2: broken JSON line (Expecting value at column 1); fix or remove it"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "config", sorted((ROOT / "configs" / "paper").glob("sft_*.yaml")), ids=lambda p: p.name
)
def test_paper_configs_parse_and_validate(config):
    from sedsft.train.cli import build_parser

    text = config.read_text()
    assert text.startswith("# ") and "accelerate launch --config_file configs/accelerate/zero2.yaml" in text
    for objective in OBJECTIVES:
        args, model_args, _ = build_parser().parse(
            ["--config", str(config), "--objective", objective, "--use_cpu"]  # bf16 needs a GPU or use_cpu
        )
        assert args.learning_rate == 2e-5 and args.bf16 and args.top_k == 2
        assert args.tau is None and args.lam == 1.0 and model_args.model_name_or_path.startswith("models/")
        if args.needs_tau:  # the paper's r and calibration rule, by default (so --tau can replace them)
            spec = args.calibration_spec(top_k=args.top_k, seed=args.seed)
            assert (spec.mask_ratio, spec.preset) == (0.7, "paper")
        # where the paper is silent, the authors' released scripts (configs/paper comments cite each)
        authors = (args.adam_beta2, args.num_train_epochs, args.max_length, args.overflow)
        assert authors == (0.95, 2, 32000, "truncate")
        assert (
            args.per_device_train_batch_size * args.gradient_accumulation_steps * 8 == 128
        )  # sequences/step
        assert (args.lr_scheduler_type, args.warmup_steps) == ("constant_with_warmup", 0.03)
        assert model_args.model_name_or_path.endswith("-Instruct")  # the paper's backbones


@pytest.mark.parametrize("preset", ["paper", "authors"])
def test_calibrate_gives_the_tau_sft_computes(tmp_path, tiny_ckpt, train_file, capsys, preset):
    """``sedsft calibrate`` and ``sedsft sft`` on the same model, data and options: the same tau, to the bit."""
    cfg = _tiny_config(tmp_path, tiny_ckpt, train_file, "sed")
    flags = ["--calibration_preset", preset]
    assert sedsft_main(["sft", "--config", str(cfg), "--max_steps", "1", *flags]) == 0
    trained = json.loads((tmp_path / "sed" / "sedsft_calibration.json").read_text())
    out = tmp_path / "cal.json"
    argv = ["calibrate", "--model", str(tiny_ckpt), "--data", str(train_file), "--output", str(out), *flags]
    assert sedsft_main([*argv, "--calibration_examples", "8", "--max_length", "128"]) == 0
    cal = json.loads(out.read_text())
    assert f"tau = {cal['tau']:.6f}" in capsys.readouterr().out
    assert cal["tau"] == trained["tau"] and cal["spec"] == trained["spec"]
    assert cal["spec"]["preset"] == preset and cal["spec"]["mask_ratio"] == 0.7 and cal["num_sequences"] == 8
    assert cal["spec"]["top_k"] == {"paper": 2, "authors": 10}[preset]


def _resume_config(tmp_path, ckpt, data) -> Path:
    cfg = tmp_path / "resume.yaml"
    cfg.write_text(
        f"model: {ckpt}\ndata: {data}\nobjective: sed\nmax_steps: 4\nsave_strategy: steps\nsave_steps: 2\n"
        "per_device_train_batch_size: 4\nlogging_steps: 1\nlearning_rate: 1.0e-3\nreport_to: none\n"
        "use_cpu: true\nbf16: false\nmax_length: 128\ncalibration_examples: 8\ndisable_tqdm: true\nseed: 0\n"
    )
    return cfg


def test_sft_interrupted_then_rerun_resumes_exactly(tmp_path, tiny_ckpt, train_file, monkeypatch, capsys):
    from safetensors.torch import load_file

    from sedsft.train.trainer import SEDSFTTrainer

    cfg = _resume_config(tmp_path, tiny_ckpt, train_file)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert sedsft_main(["sft", "--config", str(cfg), "--output_dir", str(whole)]) == 0

    real_step = SEDSFTTrainer.training_step

    def killed_in_step_4(self, *a, **kw):  # Ctrl-C during step 4: checkpoint-2 is the last one saved
        if self.state.global_step == 3:
            raise KeyboardInterrupt
        return real_step(self, *a, **kw)

    monkeypatch.setattr(SEDSFTTrainer, "training_step", killed_in_step_4)
    assert sedsft_main(["sft", "--config", str(cfg), "--output_dir", str(cut)]) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    assert not (cut / "model.safetensors").exists() and (cut / "checkpoint-2").is_dir()
    steps_run = []

    def counted(self, *a, **kw):
        steps_run.append(self.state.global_step + 1)
        return real_step(self, *a, **kw)

    monkeypatch.setattr(SEDSFTTrainer, "training_step", counted)
    assert sedsft_main(["sft", "--config", str(cfg), "--output_dir", str(cut)]) == 0
    assert steps_run == [3, 4]  # resumed from checkpoint-2, not restarted at step 0

    a, b = load_file(whole / "model.safetensors"), load_file(cut / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def losses(folder):
        rows = [json.loads(x) for x in (folder / "sedsft_metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"], r["mask_rate"], r["tau"]) for r in rows if "loss" in r]

    assert losses(cut) == losses(whole) and [s for s, *_ in losses(whole)] == [1, 2, 3, 4]

    capsys.readouterr()
    assert sedsft_main(["sft", "--config", str(cfg), "--output_dir", str(cut)]) == 0
    assert "holds this finished run" in capsys.readouterr().out
    assert sedsft_main(["sft", "--config", str(cfg), "--output_dir", str(cut), "--objective", "ce"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'holds another run (objective "sed" -> "ce")' in err[0], err
    assert (
        sedsft_main(
            ["sft", "--config", str(cfg), "--output_dir", str(cut), "--tau", "0.5", "--mask_ratio", "0.5"]
        )
        == 2
    )
    assert (
        "give --tau (a fixed threshold) or --mask_ratio (tau calibrated), not both" in capsys.readouterr().err
    )
