"""GRPO on TRL's GRPOTrainer: the math reward, group statistics in the logs, checkpoints and resume.

TRL 1.16's GRPOTrainer already logs, per logging step: ``reward`` (mean), ``reward_std``,
``frac_reward_zero_std`` (share of groups whose rewards are all equal: no learning signal),
``completions/mean_length`` (and min/max/clipped_ratio), ``entropy`` (mean next-token entropy of
the policy over completion tokens), ``clip_ratio/*`` and ``rewards/<func>/mean``. What the paper's
question (what does SFT leave for RL?) also needs is how the zero-variance groups split, which
:class:`SEDGRPOTrainer` adds from the gathered rewards of each generation batch:

- ``groups/frac_all_solved``: every sample of the prompt is correct (too easy: no signal),
- ``groups/frac_none_solved``: no sample is correct (too hard: no signal),
- ``groups/pass_at_g``: at least one sample is correct (pass@G with G = num_generations),
- ``rewards/frac_unscored``: completions with no gold answer (reward None).

Every log line also goes to ``<output_dir>/metrics.jsonl``. Use :func:`run_grpo` from Python (the
CPU demo does) and ``sedsft grpo`` from the shell.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from trl import GRPOTrainer
from trl.trainer.utils import RepeatSampler

from sedsft.errors import UserError
from sedsft.io import JsonlLog, atomic_write_text
from sedsft.rl.config import SEDGRPOConfig
from sedsft.rl.prompts import RLPrompt, to_dataset
from sedsft.rl.rewards import math_reward
from sedsft.runs import last_checkpoint


def group_stats(rewards_per_func: torch.Tensor, weights: torch.Tensor, group_size: int) -> dict[str, float]:
    """Shares of prompt groups all solved / none solved / solved at least once, and of unscored rows.

    ``rewards_per_func`` is ``[N, F]`` (N = groups x group_size, NaN = reward None); a completion
    counts as solved when its weighted reward is > 0. Groups with no scored completion are left out
    of the group shares (NaN when there are none: TRL's log skips NaN).
    """
    with torch.no_grad():  # statistics for the log, no gradient
        unscored = torch.isnan(rewards_per_func).all(dim=1)  # [N]
        rewards = (rewards_per_func * weights.to(rewards_per_func.device)).nansum(dim=1)  # [N]
        scored = (~unscored).view(-1, group_size)  # [P, G]
        solved = (rewards > 0).view(-1, group_size) & scored  # [P, G]
        counted = scored.any(dim=1)  # [P]
        num = counted.sum().clamp(min=1).float()
        nan = float("nan")
        all_solved = ((solved | ~scored).all(dim=1) & counted).sum() / num
        none_solved = ((~solved).all(dim=1) & counted).sum() / num
        any_solved = (solved.any(dim=1) & counted).sum() / num
        has_groups = bool(counted.any())
        return {
            "groups/frac_all_solved": all_solved.item() if has_groups else nan,
            "groups/frac_none_solved": none_solved.item() if has_groups else nan,
            "groups/pass_at_g": any_solved.item() if has_groups else nan,
            "rewards/frac_unscored": unscored.float().mean().item(),
        }


class EpochSeededRepeatSampler(RepeatSampler):
    """TRL's RepeatSampler whose shuffle is a function of (seed, epoch) only.

    TRL's sampler draws each epoch's permutation from one generator that advances at every ``iter``; a
    run resumed in epoch e starts a fresh generator, so it would replay epoch 0's order instead of
    epoch e's. Trainer calls ``set_epoch`` before every epoch (resumed or not), so here the order depends
    on the epoch number alone and a resumed run sees the prompts the uninterrupted run saw.
    """

    epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        if self.shuffle:
            self.generator.manual_seed((self.seed or 0) + self.epoch)
        return super().__iter__()


class SEDGRPOTrainer(GRPOTrainer):
    """GRPOTrainer that also logs the group statistics of :func:`group_stats` (module doc)."""

    def _get_train_sampler(self, dataset=None):
        sampler = super()._get_train_sampler(dataset)
        if type(sampler) is RepeatSampler:
            sampler.__class__ = EpochSeededRepeatSampler
        return sampler

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        mode = "train" if self.model.training else "eval"
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        for name, value in group_stats(rewards_per_func, self.reward_weights, group_size).items():
            self._metrics[mode][name].append(value)
        return rewards_per_func


class JsonlMetricsCallback(TrainerCallback):
    """Appends every log line (step, epoch and metrics) to ``<output_dir>/metrics.jsonl`` on the main process."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.log: JsonlLog | None = None  # opened on the main process only, at its first log line

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:  # on resume: the checkpoint's history, nothing logged after it
            rows = [{"step": r.get("step"), "epoch": r.get("epoch"), **r} for r in state.log_history]
            atomic_write_text(self.path, "".join(json.dumps(r, default=str) + "\n" for r in rows))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.log = self.log or JsonlLog(self.path)
            self.log.append({"step": state.global_step, "epoch": state.epoch, **logs})


@dataclass
class GRPOResult:
    """What :func:`run_grpo` returns."""

    output_dir: Path  # the final model (and tokenizer) is saved here
    global_step: int
    log_history: list[dict]  # the trainer's log lines, resumed runs included
    trainer: SEDGRPOTrainer


def resolve_resume(output_dir: str | Path, resume: str | bool | None) -> str | None:
    """The checkpoint to resume from: a path as given; True/"auto" -> the last one in ``output_dir``."""
    if resume in (None, False, "never"):
        return None
    if resume in (True, "auto", "last"):
        last = last_checkpoint(output_dir)
        if last is None and resume in (True, "last"):
            raise UserError(f"no checkpoint-* folder in {output_dir} to resume from; drop the resume option")
        return last
    if not Path(resume).is_dir():
        raise UserError(f"resume_from_checkpoint {resume} is not a folder; pass a checkpoint-* folder")
    return str(resume)


def _as_dataset(data):
    if data is None or hasattr(data, "column_names"):
        return data
    rows = list(data)
    if not rows:
        raise UserError("the RL dataset is empty; pass at least one prompt")
    if all(isinstance(r, RLPrompt) for r in rows):
        return to_dataset(rows)
    if all(isinstance(r, dict) and "prompt" in r for r in rows):
        from datasets import Dataset

        return Dataset.from_list(rows)
    raise UserError(
        "train_dataset must be a datasets.Dataset, a list of RLPrompt, or a list of rows with 'prompt'"
    )


def run_grpo(
    config: SEDGRPOConfig,
    *,
    model: Any,
    train_dataset: Any,
    tokenizer: Any = None,
    reward_funcs: Callable | Sequence[Callable] | None = None,
    eval_dataset: Any = None,
    peft_config: Any = None,
    callbacks: Sequence[TrainerCallback] = (),
    resume: str | bool | None = "auto",
    save_final: bool = True,
) -> GRPOResult:
    """Train ``model`` with GRPO on ``train_dataset`` and return the trainer and its logs.

    ``model``: a local checkpoint folder or an already-loaded ``PreTrainedModel`` (then pass its
    ``tokenizer``; TRL left-pads prompts itself). ``train_dataset``: a ``datasets.Dataset`` with a
    ``prompt`` column (chat messages) and a gold column (``answer``...), or a list of
    :class:`RLPrompt` (``load_rl_prompts``). ``reward_funcs`` default to :func:`math_reward`.
    ``resume``: "auto" continues from the last checkpoint in ``config.output_dir`` when there is one,
    "never"/None starts over, a path resumes from that checkpoint.
    """
    if isinstance(model, str | Path):
        if not Path(model).is_dir():
            raise UserError(
                f"model path {model} is not a folder; pass a local checkpoint (e.g. an SFT output_dir)"
            )
        model = str(model)
    output_dir = Path(config.output_dir)
    trainer = SEDGRPOTrainer(
        model=model,
        reward_funcs=list(reward_funcs)
        if isinstance(reward_funcs, Sequence)
        else (reward_funcs or math_reward),
        args=config,
        train_dataset=_as_dataset(train_dataset),
        eval_dataset=_as_dataset(eval_dataset),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[JsonlMetricsCallback(output_dir / "metrics.jsonl"), *callbacks],
    )
    checkpoint = resolve_resume(output_dir, resume)
    train_output = trainer.train(resume_from_checkpoint=checkpoint)
    if save_final:
        trainer.save_model(str(output_dir))  # weights (or adapter) + tokenizer, ready for `sedsft eval`
        trainer.save_state()
        trainer.save_metrics("train", train_output.metrics)
    return GRPOResult(
        output_dir=output_dir,
        global_step=trainer.state.global_step,
        log_history=list(trainer.state.log_history),
        trainer=trainer,
    )
