"""GRPO on a tiny CPU model: the CLI runs, logs rewards and group statistics, checkpoints and resumes;
parameters move only when some group has reward variance."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from sedsft.cli import main as sedsft_main
from sedsft.rl.config import SEDGRPOConfig
from sedsft.rl.prompts import rl_prompts_from_records
from sedsft.rl.rewards import completion_text
from sedsft.rl.trainer import group_stats, run_grpo

from .tiny import QA_ROWS, build_char_tokenizer, build_tiny_model

# 2 prompts x 4 generations per step: 4 prompts = 2 steps per epoch.
TINY = {
    "system_prompt": "none",
    "per_device_train_batch_size": 8,
    "num_generations": 4,
    "max_completion_length": 12,
    "bf16": False,
    "gradient_checkpointing": False,
    "use_cpu": True,
    "use_vllm": False,
    "dtype": "float32",
    "save_steps": 1,
    "seed": 0,
    "dataloader_num_workers": 0,
}


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_cli_logs_checkpoints_and_resumes(tiny_checkpoint, qa_file, tmp_path, capsys):
    out = tmp_path / "run"
    config = tmp_path / "tiny.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                **TINY,
                "model_name_or_path": str(tiny_checkpoint),
                "dataset_path": str(qa_file),
                "output_dir": str(out),
            }
        )
    )
    assert sedsft_main(["grpo", "--config", str(config), "--max_steps", "2"]) == 0
    steps = [m for m in _metrics(out) if "reward" in m]
    assert [m["step"] for m in steps] == [1, 2]
    for m in steps:
        for key in (
            "reward",
            "frac_reward_zero_std",
            "completions/mean_length",
            "entropy",
            "groups/pass_at_g",
        ):
            assert key in m and m[key] is not None and math.isfinite(m[key]), key
        # A random model never writes 2, 4, 6 or 8 as its last number: every group is all-wrong.
        assert m["frac_reward_zero_std"] == m["groups/frac_none_solved"] == 1.0
    assert (out / "checkpoint-2").is_dir() and (out / "model.safetensors").is_file()
    assert "sedsft grpo: 2 steps" in capsys.readouterr().out

    # The same command again: the finished run is reported, not redone; a longer budget there is refused.
    assert sedsft_main(["grpo", "--config", str(config), "--max_steps", "2"]) == 0
    assert "holds this finished run" in capsys.readouterr().out
    assert sedsft_main(["grpo", "--config", str(config), "--max_steps", "3"]) == 2
    assert "holds another run (max_steps 2 -> 3)" in capsys.readouterr().err
    # A longer budget from checkpoint-2 into a new folder continues instead of starting over.
    more = tmp_path / "more"
    argv = ["grpo", "--config", str(config), "--max_steps", "3", "--output_dir", str(more)]
    assert sedsft_main([*argv, "--resume_from_checkpoint", str(out / "checkpoint-2")]) == 0
    assert [m["step"] for m in _metrics(more) if "reward" in m] == [1, 2, 3]
    assert json.loads((more / "trainer_state.json").read_text())["global_step"] == 3


class _Killed(Exception):
    """Stands in for a job killed mid-run."""


def _length_reward(completions, **kwargs):
    """Deterministic and varied within groups (the random model solves nothing): the weights move."""
    return [float(len(completion_text(c)) % 3 == 0) for c in completions]


def test_interrupted_grpo_resumed_with_the_same_command_equals_uninterrupted(
    tiny_checkpoint, qa_file, tmp_path, monkeypatch
):
    """Killed after a checkpoint that falls inside a rollout (2 optimizer steps per generation batch, as in
    the authors' recipe) and after logging a step past it; rerun: same weights, no duplicate metrics rows."""
    from safetensors.torch import load_file

    from sedsft.rl import rewards
    from sedsft.rl.trainer import SEDGRPOTrainer

    monkeypatch.setattr(rewards, "math_reward", _length_reward)

    def command(out):
        config = tmp_path / f"{out.name}.yaml"
        settings = {**TINY, "model_name_or_path": str(tiny_checkpoint), "dataset_path": str(qa_file)}
        settings.update(output_dir=str(out), max_steps=6, save_steps=3, learning_rate=1e-2)
        settings["generation_batch_size"] = 2 * TINY["per_device_train_batch_size"]  # 2 steps per rollout
        config.write_text(yaml.safe_dump(settings))
        return ["grpo", "--config", str(config)]

    full, part = tmp_path / "full", tmp_path / "part"
    assert sedsft_main(command(full)) == 0
    train_step = SEDGRPOTrainer.training_step

    def killed_in_step_5(self, *args, **kwargs):
        if self.state.global_step == 4:  # step 4 is logged, the last checkpoint is checkpoint-3
            raise _Killed
        return train_step(self, *args, **kwargs)

    monkeypatch.setattr(SEDGRPOTrainer, "training_step", killed_in_step_5)
    with pytest.raises(_Killed):
        sedsft_main(command(part))
    assert [m["step"] for m in _metrics(part) if "loss" in m] == [1, 2, 3, 4]
    assert (part / "checkpoint-3" / "sedsft_rollout_rank0.pt").is_file()
    monkeypatch.setattr(SEDGRPOTrainer, "training_step", train_step)
    assert sedsft_main(command(part)) == 0  # the same command again

    rows = {out: [m for m in _metrics(out) if "loss" in m] for out in (full, part)}
    assert [m["step"] for m in rows[part]] == [1, 2, 3, 4, 5, 6]  # step 4 once, not twice
    assert [m["loss"] for m in rows[part]] == [m["loss"] for m in rows[full]]
    start = build_tiny_model(build_char_tokenizer()).state_dict()
    got, want = load_file(part / "model.safetensors"), load_file(full / "model.safetensors")
    assert any(not torch.equal(want[k], start[k]) for k in want), "the weights did not move"
    for k in want:
        assert torch.equal(got[k], want[k]), k


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert sedsft_main(["grpo", "--output_dir", str(tmp_path), "--use_cpu", "true"]) == 2
    assert "--model is required" in capsys.readouterr().err
    assert (
        sedsft_main(["grpo", "--output_dir", str(tmp_path), "--use_cpu", "true", "--num_generations", "0"])
        == 2
    )
    assert "num_generations must be an integer >= 2 (or unset), got 0" in capsys.readouterr().err
    assert (
        sedsft_main(["grpo", "--output_dir", str(tmp_path), "--use_cpu", "true", "--temperature", "nan"]) == 2
    )
    assert "temperature must be a finite number > 0, got nan" in capsys.readouterr().err


def _alternating(completions, **kwargs):
    return [float(i % 2) for i in range(len(completions))]  # every group of 4 has variance


def _constant(completions, **kwargs):
    return [1.0] * len(completions)  # every group is all-correct: zero advantage


@pytest.mark.parametrize(("reward", "moves"), [(_alternating, True), (_constant, False)])
def test_parameters_move_only_with_reward_variance(tmp_path, reward, moves):
    tok = build_char_tokenizer()
    model = build_tiny_model(tok)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = SEDGRPOConfig(
        output_dir=str(tmp_path / "run"),
        max_steps=1,
        learning_rate=1e-3,
        weight_decay=0.0,
        save_strategy="no",
        **{k: v for k, v in TINY.items() if k not in ("system_prompt", "dtype", "save_steps")},
    )
    prompts = rl_prompts_from_records(QA_ROWS, system_prompt=None)
    result = run_grpo(
        config, model=model, tokenizer=tok, train_dataset=prompts, reward_funcs=reward, save_final=False
    )
    logged = next(h for h in result.log_history if "reward" in h)
    changed = any(not torch.equal(before[n], p.detach()) for n, p in model.named_parameters())
    assert changed is moves
    assert logged["frac_reward_zero_std"] == (0.0 if moves else 1.0)
    assert logged["groups/frac_all_solved"] == (0.0 if moves else 1.0)
    assert logged["groups/pass_at_g"] == 1.0


@pytest.mark.parametrize(
    ("rewards", "expected"),
    [
        # two groups of 3: one mixed, one all wrong
        ([1, 0, 0, 0, 0, 0], (0.0, 0.5, 0.5, 0.0)),
        # all solved, all unscored (left out of the group shares)
        ([1, 1, 1, None, None, None], (1.0, 0.0, 1.0, 0.5)),
        # a partly unscored group counts its scored samples only
        ([1, None, 1, 0, None, 0], (0.5, 0.5, 0.5, 1 / 3)),
    ],
)
def test_group_stats(rewards, expected):
    column = torch.tensor([[math.nan if r is None else float(r)] for r in rewards])  # [N, 1]
    stats = group_stats(column, torch.ones(1), group_size=3)
    got = (
        stats["groups/frac_all_solved"],
        stats["groups/frac_none_solved"],
        stats["groups/pass_at_g"],
        stats["rewards/frac_unscored"],
    )
    assert got == pytest.approx(expected)


def test_group_stats_with_nothing_scored():
    stats = group_stats(torch.full((4, 1), math.nan), torch.ones(1), group_size=2)
    assert math.isnan(stats["groups/pass_at_g"]) and stats["rewards/frac_unscored"] == 1.0
