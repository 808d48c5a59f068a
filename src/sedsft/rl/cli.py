"""``sedsft grpo``: GRPO with the verifiable math reward, from a local model on a local prompt file.

    sedsft grpo --config configs/paper/grpo_qwen2.5-math-7b.yaml --model_name_or_path out/sft-sed
    sedsft grpo --model_name_or_path out/sft-ce --dataset_path data.jsonl --output_dir out/rl-ce \\
        --max_steps 100 --per_device_train_batch_size 8 --gradient_accumulation_steps 32

Options are TRL's: :class:`~sedsft.rl.config.GRPOScriptArguments` (data, reward), then
:class:`~sedsft.rl.config.SEDGRPOConfig` (GRPOConfig with the paper's recipe as defaults), then
TRL's ModelConfig (``--model_name_or_path`` or ``--model``, ``--dtype``, ``--use_peft`` ...).
``--config`` reads a YAML file of the same names; flags given on the command line win.
``--output_dir`` is a run folder (:mod:`sedsft.runs`): rerunning the same command continues from its
last complete checkpoint; other options, another model or data are refused there unless
``--overwrite`` (which starts over). To train on from a checkpoint with a longer budget, use a new
``--output_dir`` with ``--resume_from_checkpoint PATH``.
"""

from __future__ import annotations

import contextlib
import os

from sedsft.cli_parse import CommandParser, RunOptions, TrainModelOptions
from sedsft.errors import UserError


def build_parser() -> CommandParser:
    from sedsft.rl.config import GRPOScriptArguments, SEDGRPOConfig

    renamed = {"--resume": "a plain rerun (it resumes), or --overwrite (it starts over)"}
    return CommandParser(
        "grpo", (GRPOScriptArguments, SEDGRPOConfig, TrainModelOptions, RunOptions), renamed=renamed
    )


def model_init_kwargs(config, model_args) -> dict:
    """``from_pretrained`` options: ModelConfig's dtype/attention/revision, under any given in the config."""
    kwargs = {"dtype": model_args.dtype or "auto"}
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    if model_args.model_revision and model_args.model_revision != "main":
        kwargs["revision"] = model_args.model_revision
    return {**kwargs, **(config.model_init_kwargs or {})}


def _bounded(train, evaluation, model: str, config, overflow: str):
    """The prompts fitted to the model's context (``--overflow``), before the trainer makes a tensor of them."""
    from sedsft.limits import local_token_limit
    from sedsft.rl.prompts import bound_prompts

    tokenizer, limit = local_token_limit(model, trust_remote_code=config.trust_remote_code)
    train = bound_prompts(train, tokenizer, limit=limit, overflow=overflow)
    if evaluation is not None:
        evaluation = bound_prompts(
            evaluation, tokenizer, limit=limit, overflow=overflow, what="evaluation prompts"
        )
    return train, evaluation


def main(argv: list[str]) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    script, config, model_args, run_options = build_parser().parse(argv)
    from trl import get_peft_config

    from sedsft.models import check_model, check_peft_targets, load_training_model
    from sedsft.rl.prompts import load_rl_prompts
    from sedsft.rl.rewards import REWARDS, PooledMathReward
    from sedsft.rl.trainer import resolve_resume, run_grpo
    from sedsft.runs import RunSpec, open_training_run, settings_of, training_settings

    # weights, code and chat template, before the run folder is opened
    model = check_model(
        model_args.model_name_or_path,
        trust_remote_code=config.trust_remote_code,
        system_prompt=script.system_prompt,
    )
    check_peft_targets(model, get_peft_config(model_args), trust_remote_code=config.trust_remote_code)
    if not script.dataset_path:
        raise UserError(
            "pass --dataset_path: a local prompt file (e.g. ../shared/data/rl/math_level1_filtered.parquet)"
        )
    resume = config.resume_from_checkpoint or "auto"  # a new folder has no checkpoint to resume from
    resolve_resume(config.output_dir, resume)  # a bad checkpoint path, before anything is loaded
    options = {"system_prompt": script.system_prompt, "missing_gold": script.missing_gold}
    train = load_rl_prompts(script.dataset_path, limit=script.max_prompts, **options)
    evaluation = load_rl_prompts(script.eval_dataset_path, **options) if script.eval_dataset_path else None
    train, evaluation = _bounded(train, evaluation, model, config, script.overflow)
    config.model_init_kwargs = model_init_kwargs(config, model_args)
    spec = RunSpec(
        "grpo",
        settings={**settings_of(script), **training_settings(config, model_args)},
        inputs={"model": model, "data": script.dataset_path, "eval_data": script.eval_dataset_path},
    )
    run = open_training_run(config, spec, overwrite=run_options.overwrite, wait=run_options.wait)
    if run.finished:
        if run.main_process:
            print(
                f"sedsft grpo: {config.output_dir} holds this finished run; nothing to do (--overwrite trains again)"
            )
        return 0

    policy, tokenizer = load_training_model(  # the one model loader, as sft's
        model_args, trust_remote_code=config.trust_remote_code, init_kwargs=config.model_init_kwargs
    )
    config.model_init_kwargs = None  # applied above; TRL builds a reference model like the policy
    tokenizer.padding_side = tokenizer.truncation_side = "left"  # as TRL loads a tokenizer for GRPO
    with contextlib.ExitStack() as stack:
        reward = REWARDS[script.reward]
        if script.reward_workers > 0:  # --reward math only (GRPOScriptArguments)
            reward = stack.enter_context(
                PooledMathReward(workers=script.reward_workers, timeout_s=script.reward_timeout_s)
            )
        result = run_grpo(
            config,
            model=policy,
            tokenizer=tokenizer,
            train_dataset=train,
            eval_dataset=evaluation,
            reward_funcs=[reward],
            peft_config=get_peft_config(model_args),
            resume=resume,
        )
    run.mark_finished()
    if result.trainer.is_world_process_zero():
        rewards = [h["reward"] for h in result.log_history if h.get("reward") is not None]
        last = f", last logged reward {rewards[-1]:.3f}" if rewards else ""
        print(f"sedsft grpo: {result.global_step} steps{last}; model saved to {result.output_dir}")
    return 0
