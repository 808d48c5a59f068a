"""``SEDSFTTrainer``: TRL's ``SFTTrainer`` with any registered objective as the loss.

What it changes in ``SFTTrainer``, and nothing else:

- ``compute_loss``: the objective through the fused LM head (``fused_forward_loss``: the model runs its
  own forward for the hidden states, the loss owns the head) or on the model's logits
  (``objective_loss``). The loss is divided by Trainer's ``num_items_in_batch`` -- the label tokens of the
  whole optimizer step on all processes -- and multiplied by the number of processes as
  ``Trainer.compute_loss`` does (DDP averages gradients), so accumulation and data parallelism are exact.
- ``log``: the objective's statistics (mask_rate, de_penalty, gold_prob, entropy, topk_mass, top1_acc).
  Their sums are accumulated over the steps since the last log, all-reduced once and divided once.
- ``train``: tau is fixed before the first step. Given (``tau``), taken from the checkpoint on resume, or
  calibrated at the first training step (every rank scores its share of one seeded sample, the values are
  gathered, and every rank computes the same exact quantile), then saved to ``sedsft_calibration.json``
  in ``output_dir`` and in every checkpoint.

Data is tokenized by :mod:`sedsft.data` (completion-only labels) and padded by :class:`SFTCollator`; TRL's
own dataset preparation is skipped.
"""

from __future__ import annotations

import logging
import math
import os
import random

import torch
from accelerate.utils import broadcast_object_list, gather_object
from transformers import AutoTokenizer
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTTrainer

from sedsft.calibrate import CALIBRATION_FILE, Calibration, exact_quantile, topk_mass
from sedsft.data import SFTCollator, build_sft_dataset
from sedsft.errors import UserError
from sedsft.losses import BatchStats, check_fusable, fused_forward_loss, objective_loss

from .callbacks import SEDSFTFilesCallback
from .config import SEDSFTConfig

logger = logging.getLogger(__name__)

_QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def calibration_sample(num_examples: int, size: int, *, seed: int) -> list[int]:
    """The training-set indices tau is calibrated on (``sedsft calibrate`` draws the same ones)."""
    return sorted(random.Random(seed).sample(range(num_examples), min(int(size), num_examples)))


class SEDSFTTrainer(SFTTrainer):
    """Supervised fine-tuning with CE, DFT, GEM or SED-SFT (see :class:`SEDSFTConfig`).

    ``train_dataset`` is either tokenized (``input_ids``/``labels`` columns, e.g. from
    :func:`sedsft.data.build_sft_dataset`) or raw records, which are converted with ``args.system_prompt``,
    ``args.max_length`` and ``args.overflow``.
    """

    _tag_names = ["trl", "sft", "sedsft"]

    def __init__(
        self, model, args: SEDSFTConfig, train_dataset, eval_dataset=None, processing_class=None, **kwargs
    ):
        if not isinstance(args, SEDSFTConfig):
            raise TypeError(f"args must be a SEDSFTConfig, got {type(args).__name__}")
        if processing_class is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            processing_class = AutoTokenizer.from_pretrained(name, trust_remote_code=args.trust_remote_code)
        if processing_class.pad_token is None:
            processing_class.pad_token = processing_class.eos_token
        self.data_report = None
        train_dataset = self._tokenized(train_dataset, processing_class, args, "train")
        if eval_dataset is not None:
            eval_dataset = self._tokenized(eval_dataset, processing_class, args, "eval")
        kwargs.setdefault(
            "data_collator",
            SFTCollator(processing_class.pad_token_id, pad_to_multiple_of=args.pad_to_multiple_of),
        )
        super().__init__(
            model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        # Our loss is a sum over label tokens divided by num_items_in_batch: have Trainer count them per
        # optimizer step (over all processes) and not divide the loss again by the accumulation steps.
        self.model_accepts_loss_kwargs = True
        self.loss_impl = self._resolve_loss_impl()
        self.tau: float | None = args.tau
        self.calibration: Calibration | None = None
        self._stat_sums: dict[str, torch.Tensor | None] = {"train": None, "eval": None}
        self.add_callback(SEDSFTFilesCallback(self))

    # ---- setup -----------------------------------------------------------------------------------

    def _tokenized(self, dataset, tokenizer, args: SEDSFTConfig, split: str):
        columns = dataset.column_names if hasattr(dataset, "column_names") else None
        if columns is not None and "input_ids" in columns and "labels" in columns:
            return dataset
        records = [dict(r, _source=r.get("_source", f"{split}[{i}]")) for i, r in enumerate(dataset)]
        ds, report = build_sft_dataset(
            records,
            tokenizer,
            system_prompt=args.system_prompt,
            max_length=args.max_length,
            overflow=args.overflow,
        )
        logger.info("%s data: %s", split, report.summary())
        if split == "train":
            self.data_report = report
        return ds

    def _resolve_loss_impl(self) -> str:
        """'fused' or 'logits'; 'auto' falls back to logits (with a warning) where the head is not fusable."""
        want = self.args.loss_impl
        if want == "logits":
            return "logits"
        reason = None
        if self.is_fsdp_enabled:
            reason = "FSDP shards the LM-head weight outside forward"
        elif self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3:
            reason = "DeepSpeed ZeRO-3 shards the LM-head weight outside forward"
        else:
            try:
                check_fusable(self.model)
            except ValueError as e:
                reason = str(e)
        if reason is None:
            return "fused"
        if want == "fused":
            raise UserError(
                f"--loss_impl fused is not possible here: {reason}; use --loss_impl logits or auto"
            )
        logger.warning("loss_impl=auto: using the logits path (%s)", reason)
        return "logits"

    # ---- tau ----------------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint=None, trial=None, **kwargs):
        if self.args.needs_tau:
            self._restore_tau(resume_from_checkpoint)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)

    def _restore_tau(self, resume_from_checkpoint) -> None:
        """tau before training: the given one, or on resume the saved one (never recalibrated)."""
        if self.args.tau is not None:
            self.tau = float(self.args.tau)
            self.calibration = Calibration(
                tau=self.tau,
                top_k=self.args.top_k,
                mask_ratio=self.args.mask_ratio,
                positions=self.args.calibration_positions,
                num_positions=0,
                num_sequences=0,
                sample={"source": "given (--tau)"},
            )
            self._save_calibration(self.args.output_dir)
            return
        if not resume_from_checkpoint:
            self.tau = None  # a fresh run calibrates on its initial model at the first step
            return
        ckpt = resume_from_checkpoint
        if ckpt is True or (isinstance(ckpt, str) and ckpt.lower() == "true"):
            ckpt = get_last_checkpoint(self.args.output_dir)
            if ckpt is None:
                raise UserError(f"--resume_from_checkpoint: no checkpoint found in {self.args.output_dir}")
        for folder in (ckpt, self.args.output_dir):
            path = os.path.join(folder, CALIBRATION_FILE)
            if os.path.isfile(path):
                cal = Calibration.load(path)
                if (cal.top_k, cal.positions) != (
                    self.args.top_k,
                    self.args.calibration_positions,
                ) or not math.isclose(cal.mask_ratio, self.args.mask_ratio):
                    raise UserError(
                        f"{path} was calibrated with top_k={cal.top_k}, mask_ratio={cal.mask_ratio}, "
                        f"positions={cal.positions}; resume with the same settings or pass --tau"
                    )
                self.tau, self.calibration = cal.tau, cal
                logger.info("resuming with tau=%.6f from %s (not recalibrated)", cal.tau, path)
                return
        raise UserError(
            f"cannot resume SED-SFT: no {CALIBRATION_FILE} in {ckpt} or {self.args.output_dir}; pass --tau <value>"
        )

    def _calibration_sample(self) -> list[int]:
        return calibration_sample(
            len(self.train_dataset), self.args.calibration_examples, seed=self.args.seed
        )

    @torch.no_grad()
    def calibrate_tau(self, model) -> Calibration:
        """tau on ``model`` (the initial weights) over a seeded sample; identical on every process.

        Each process scores every ``num_processes``-th example of the sample with the same number of
        forward passes (collectives inside DDP/ZeRO-3/FSDP forwards stay matched); the per-example values
        are gathered, put back in sample order, and every process takes the same exact quantile.
        """
        args, acc = self.args, self.accelerator
        sample = self._calibration_sample()
        mine = sample[acc.process_index :: acc.num_processes]
        bs = args.per_device_eval_batch_size
        n_batches = math.ceil(math.ceil(len(sample) / acc.num_processes) / bs)
        collate = self.data_collator
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        scored: list[tuple[int, torch.Tensor]] = []
        try:
            for b in range(n_batches):  # one forward per batch, the same count on every process
                idx = mine[b * bs : (b + 1) * bs]
                # a process with no rows left runs a spare forward (values dropped) to stay in step
                rows = idx or sample[:1]
                batch = {k: v.to(device) for k, v in collate([self.train_dataset[i] for i in rows]).items()}
                scored += zip(idx, self._score(model, batch)[: len(idx)], strict=False)
        finally:
            model.train(was_training)
        if acc.num_processes > 1:
            scored = gather_object(scored)
        scored.sort(key=lambda t: t[0])
        values = torch.cat([v for _, v in scored]) if scored else torch.zeros(0)
        if args.calibration_max_tokens is not None:
            values = values[: args.calibration_max_tokens]
        tau = exact_quantile(values, 1.0 - float(args.mask_ratio))
        if acc.num_processes > 1:
            tau = broadcast_object_list([tau], from_process=0)[0]  # already equal; made certain
        return Calibration(
            tau=tau,
            top_k=args.top_k,
            mask_ratio=float(args.mask_ratio),
            positions=args.calibration_positions,
            num_positions=int(values.numel()),
            num_sequences=len(sample),
            quantiles={f"q{int(q * 100):02d}": exact_quantile(values, q) for q in _QUANTILES},
            sample={
                "dataset": args.dataset_path,
                "seed": args.seed,
                "examples": len(sample),
                "max_tokens": args.calibration_max_tokens,
                "processes": acc.num_processes,
            },
        )

    def _score(self, model, batch: dict) -> list[torch.Tensor]:
        """P_topk at the calibration positions of each row of ``batch``, as CPU tensors."""
        positions = self.args.calibration_positions
        values = topk_mass(model, batch, top_k=self.args.top_k, positions=positions).cpu()  # [N] row-major
        if positions == "labels":
            counts = (batch["labels"][:, 1:] != -100).sum(1)  # [B]
        else:
            counts = batch["attention_mask"].sum(1)
        return list(values.split(counts.tolist()))

    def _save_calibration(self, folder: str) -> None:
        if self.calibration is not None and self.accelerator.is_main_process:
            self.calibration.save(os.path.join(folder, CALIBRATION_FILE))

    # ---- loss and logging -------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        if self.args.needs_tau and self.tau is None:
            self.calibration = self.calibrate_tau(model)
            self.tau = self.calibration.tau
            self._save_calibration(self.args.output_dir)
            logger.info(
                "calibrated tau=%.6f on %d positions (%d examples, top_k=%d, r=%.2f)",
                self.tau,
                self.calibration.num_positions,
                self.calibration.num_sequences,
                self.args.top_k,
                self.args.mask_ratio,
            )
        options = self.args.objective_options(tau=self.tau)
        batch = {k: inputs[k] for k in ("input_ids", "attention_mask", "labels") if k in inputs}
        if self.loss_impl == "fused":
            out = fused_forward_loss(
                model,
                batch,
                objective=self.args.objective,
                num_items_in_batch=num_items_in_batch,
                return_stats=True,
                impl=self.args.fused_impl,
                **options,
            )
        else:
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False
            ).logits
            out = objective_loss(
                self.args.objective,
                logits,
                batch["labels"],
                num_items_in_batch=num_items_in_batch,
                return_stats=True,
                **options,
            )
        loss = out.loss
        # As Trainer.compute_loss: num_items_in_batch counts all processes' tokens and DDP averages gradients.
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        sums = out.stats.as_tensor().detach()  # [9] float64 sums
        self._stat_sums[mode] = sums if self._stat_sums[mode] is None else self._stat_sums[mode] + sums
        if mode == "train":  # TRL's running token count, gathered the way SFTTrainer does it
            n = self.accelerator.gather_for_metrics(batch["attention_mask"].sum()).sum().item()
            self._total_train_tokens += n // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        if return_outputs:
            with torch.no_grad():
                outputs = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"))
            return loss, outputs
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        sums = self._stat_sums[mode]
        if sums is not None:  # every process has logged the same number of steps: the reduce is matched
            if self.accelerator.num_processes > 1:
                sums = self.accelerator.reduce(sums, reduction="sum")
            prefix = "eval_" if mode == "eval" else ""
            logs.update({prefix + k: v for k, v in BatchStats.from_tensor(sums).means().items()})
            self._stat_sums[mode] = None
        if self.tau is not None and mode == "train":
            logs["tau"] = self.tau
        super().log(logs, start_time)
