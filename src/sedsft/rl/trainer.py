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

Every log line also goes to ``<output_dir>/metrics.jsonl`` (rewritten from the checkpoint's history on
resume, so no row is written twice). Use :func:`run_grpo` from Python (the CPU demo does) and ``sedsft
grpo`` from the shell.

Resume is exact (with Transformers generation): an interrupted run continued from its last checkpoint ends
with the weights of an uninterrupted one. Two things in TRL 1.16 stand in the way and are mended here:

- the prompt order: TRL's sampler draws each epoch's shuffle from one generator that advances at every
  epoch, so a run resumed in epoch e replayed epoch 0's order. :class:`EpochSeededRepeatSampler` makes the
  order a function of (seed, epoch).
- a checkpoint inside a rollout (several optimizer steps per generation batch, as in the authors' verl
  recipe: ppo_mini_batch_size 32 of 256 prompts): TRL keeps the generated batch in memory only, so a
  resumed run generated it again, with other samples. Each checkpoint now holds the rollout in progress
  (``sedsft_rollout_rank<r>.pt``: TRL's buffered batch and micro-step counter) and resume restores it.

vLLM's sampler state is not in any checkpoint: with vLLM a resumed run continues with the same data order,
weights and rollout, but draws fresh samples after the checkpoint.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer
from trl.trainer.utils import RepeatSampler

from sedsft.errors import UserError
from sedsft.io import atomic_write_bytes
from sedsft.rl.config import SEDGRPOConfig
from sedsft.rl.prompts import RLPrompt, to_dataset
from sedsft.rl.rewards import math_reward
from sedsft.runs import check_checkpoint, last_checkpoint
from sedsft.train.callbacks import MetricsLogCallback

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
ROLLOUT_FILE = "sedsft_rollout_rank{rank}.pt"


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

    Trainer calls ``set_epoch`` before every epoch, resumed or not, so a resumed run sees the prompts the
    uninterrupted run saw (TRL's own sampler advances one generator per epoch, which a resumed run lacks).
    """

    epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        if self.shuffle:
            self.generator.manual_seed((self.seed or 0) + self.epoch)
        return super().__iter__()


class SEDGRPOTrainer(GRPOTrainer):
    """GRPOTrainer that logs the group statistics of :func:`group_stats` and resumes exactly (module doc)."""

    def _get_train_sampler(self, dataset=None):
        s = super()._get_train_sampler(dataset)
        return EpochSeededRepeatSampler(
            data_source=s.data_source,
            mini_repeat_count=s.mini_repeat_count,
            batch_size=s.batch_size,
            repeat_count=s.repeat_count,
            shuffle=s.shuffle,
            seed=s.seed,
        )

    # ---- the rollout in progress travels with each checkpoint ---------------------------------------

    def _save_checkpoint(self, model, trial):
        folder = os.path.join(
            self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        )
        self._save_rollout(folder)  # before TRL's files: a checkpoint with trainer_state.json has its rollout
        super()._save_checkpoint(model, trial)

    def _save_rollout(self, folder: str) -> None:
        inside = self._step % (self.args.steps_per_generation * self.num_iterations) != 0
        state = {"step": self._step, "buffer": self._buffered_inputs if inside else None}
        data = io.BytesIO()
        torch.save(state, data)
        rank = self.accelerator.process_index
        atomic_write_bytes(os.path.join(folder, ROLLOUT_FILE.format(rank=rank)), data.getvalue())

    def _load_rollout(self, checkpoint: str) -> None:
        path = os.path.join(checkpoint, ROLLOUT_FILE.format(rank=self.accelerator.process_index))
        if not os.path.isfile(path):
            logger.warning(
                "%s has no rollout file: a rollout cut by this checkpoint is generated again", checkpoint
            )
            return
        state = torch.load(path, map_location=self.accelerator.device, weights_only=False)  # our own file
        self._step, self._buffered_inputs = state["step"], state["buffer"]

    def train(self, resume_from_checkpoint=None, trial=None, **kwargs):
        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            checkpoint = last_checkpoint(self.args.output_dir)
        if isinstance(checkpoint, str):
            self._load_rollout(checkpoint)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)

    # ---- logging ------------------------------------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        mode = "train" if self.model.training else "eval"
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        for name, value in group_stats(rewards_per_func, self.reward_weights, group_size).items():
            self._metrics[mode][name].append(value)
        return rewards_per_func


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
    return check_checkpoint(resume)


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
        callbacks=[MetricsLogCallback(METRICS_FILE), *callbacks],
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
