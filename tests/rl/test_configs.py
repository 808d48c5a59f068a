"""The paper's GRPO configs parse, validate, and say what the paper says."""

from __future__ import annotations

from pathlib import Path

import pytest

from sedsft.errors import UserError
from sedsft.rl.cli import build_parser
from sedsft.rl.config import GRPOScriptArguments, SEDGRPOConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs" / "paper").glob("grpo_*.yaml"))
GPUS = 8  # the launch command in each config's first lines uses 8 processes


def test_both_backbones_have_a_config():
    assert {p.name for p in CONFIGS} == {"grpo_qwen2.5-math-7b.yaml", "grpo_llama3.2-3b.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_paper_config(path, tmp_path):
    first = path.read_text().splitlines()[:4]
    assert first[0].startswith("# ") and any("sedsft.cli grpo" in line for line in first)
    script, config, model, _ = build_parser().parse_args_and_config(
        ["--config", str(path), "--output_dir", str(tmp_path), "--bf16", "false", "--use_cpu", "true"]
    )
    assert script.dataset_path.endswith("rl/math_level1_filtered.parquet")
    assert model.model_name_or_path.startswith("runs/sft_")
    assert (config.num_generations, config.epsilon, config.epsilon_high, config.beta) == (8, 0.2, 0.28, 0.0)
    assert (config.loss_type, config.learning_rate, config.scale_rewards) == ("dapo", 1e-6, "group")
    assert config.use_vllm is True and config.temperature == 1.0 and config.delta == 3.0
    # the authors' verl script: rollouts of 256 prompts x 8 samples, updates on mini-batches of 32 prompts
    assert config.generation_batch_size == 256 * 8
    per_update = config.per_device_train_batch_size * config.gradient_accumulation_steps * GPUS
    assert per_update == 32 * 8 and config.generation_batch_size // per_update == 8
    assert (config.num_train_epochs, config.max_completion_length, config.max_grad_norm) == (10, 3072, 1.0)
    assert (
        config.save_steps % (config.generation_batch_size // per_update) == 0
    )  # whole rollouts (any would resume)


def test_defaults_are_the_paper_recipe(tmp_path):
    config = SEDGRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, use_vllm=False)
    assert (config.num_generations, config.epsilon, config.epsilon_high, config.beta) == (8, 0.2, 0.28, 0.0)
    assert (config.loss_type, config.learning_rate, config.weight_decay) == ("dapo", 1e-6, 0.01)
    assert config.delta == 3.0  # verl's dual clip (clip_ratio_c)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epsilon_high": 0.1}, "epsilon_high must be >= epsilon"),
        ({"beta": -1.0}, "beta must be >= 0"),
        ({"delta": 1.2}, "delta must be > 1 \\+ epsilon_high"),
    ],
)
def test_config_validation(tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        SEDGRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, use_vllm=False, **kwargs)


def test_script_arguments():
    assert GRPOScriptArguments(system_prompt="none").system_prompt is None
    with pytest.raises(UserError, match="reward_workers must be an integer >= 0"):
        GRPOScriptArguments(reward_workers=-1)


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "paper").glob("*.yaml")), ids=lambda p: p.name)
def test_every_value_cites_its_source(path):
    """Each setting of a paper config says where it comes from: the paper, the authors' code, or ours (why)."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line and not line.startswith((" ", "#")):
            comment = line.partition("#")[2]
            assert any(w in comment for w in ("paper", "authors", "ours")), f"{path.name}:{number}: {line}"
