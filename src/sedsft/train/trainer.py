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
  calibrated at the first training step by :func:`sedsft.calibrate.calibrate` (the loop ``sedsft
  calibrate`` runs: every rank scores whole batches of one sample, the values are gathered, every rank
  gets the same tau), then saved to ``sedsft_calibration.json`` in ``output_dir`` and in every checkpoint.

Data is tokenized by :mod:`sedsft.data` (completion-only labels) and collated by :class:`SFTCollator`; TRL's
own dataset preparation is skipped. TRL's ``packing`` (documents packed with ``pack_dataset``, best fit)
and ``padding_free`` give padding-free batches: one row per batch, ``position_ids`` restarting at each
document, no label across a document boundary, and an attention implementation that keeps documents apart.

The head may be sharded (ZeRO-3, FSDP2): ``fused_forward_loss`` gathers it for the loss only. A frozen head
(PEFT) gets no weight gradient; PEFT's trainable copy of the head (``modules_to_save``) is fused. A LoRA
adapter on the head is refused in one line (TRL 1.16's SFTTrainer refuses it, see ``_refuse_lora_on_head``);
any other head the fused path cannot reproduce falls back to the logits path with a one-line notice.
"""

from __future__ import annotations

import contextlib
import logging
import os

import torch
from transformers import AutoTokenizer
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTTrainer, pack_dataset

from sedsft.calibrate import CALIBRATION_FILE, Calibration, LazyTokenized, calibrate
from sedsft.data import SFTCollator, build_sft_dataset
from sedsft.errors import UserError
from sedsft.limits import token_limit
from sedsft.losses import BatchStats, check_fusable, fused_forward_loss, objective_loss

from .callbacks import SEDSFTFilesCallback
from .config import SEDSFTConfig

logger = logging.getLogger(__name__)


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
        _refuse_lora_on_head(model, kwargs.get("peft_config"))
        self.data_report = None
        # records are bounded before any tensor exists: by --max_length, else the model's context
        config = getattr(model, "config", None)
        self.token_limit = token_limit(
            max_length=args.max_length, config=config, tokenizer=processing_class, max_length_wins=True
        )
        context = token_limit(config=config, tokenizer=processing_class)
        if args.max_length is not None and context.tokens is not None and args.max_length > context.tokens:
            logger.info("--max_length %d is past %s: longer examples train past it", args.max_length, context)
        self._calibration_data = train_dataset  # as given: raw records are tokenized as sedsft calibrate does
        train_dataset = self._tokenized(train_dataset, processing_class, args, "train")
        if eval_dataset is not None:
            eval_dataset = self._tokenized(eval_dataset, processing_class, args, "eval")
        padding_free = _check_padding_free(args, custom_collator="data_collator" in kwargs)
        if args.packing:
            train_dataset = pack_dataset(train_dataset, args.max_length, args.packing_strategy)
        if eval_dataset is not None and (args.packing if args.eval_packing is None else args.eval_packing):
            eval_dataset = pack_dataset(eval_dataset, args.max_length, args.packing_strategy)
        kwargs.setdefault(
            "data_collator",
            SFTCollator(
                processing_class.pad_token_id,
                pad_to_multiple_of=args.pad_to_multiple_of,
                padding_free=padding_free,
            ),
        )
        with _trl_packing_off(args):  # sedsft packed and collates the data itself (see _trl_packing_off)
            super().__init__(
                model,
                args=args,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                **kwargs,
            )
        self.padding_free = padding_free
        if padding_free:
            check_packed_attention(self.model)
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
            max_length=self.token_limit.tokens,
            overflow=args.overflow,
            reason=self.token_limit.reason,
        )
        logger.info("%s data: %s", split, report.summary())
        if split == "train":
            self.data_report = report
        return ds

    def _resolve_loss_impl(self) -> str:
        """'fused' or 'logits'; 'auto' falls back to logits (with a one-line notice) where the head is not fusable.

        A sharded head (ZeRO-3, FSDP2) is fused: the loss gathers it (``sedsft.losses.sharded``).
        """
        want = self.args.loss_impl
        if want == "logits":
            return "logits"
        reason = None
        plugin = self.accelerator.state.fsdp_plugin if self.is_fsdp_enabled else None
        if plugin is not None and plugin.fsdp_version == 1 and plugin.use_orig_params:
            reason = "FSDP1 with use_orig_params=true keeps the LM head as a flat shard outside forward (use FSDP2)"
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
            self.calibration = Calibration(tau=self.tau, spec=None, source={"given": "--tau"})
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
        spec = self.args.calibration_spec(top_k=self.args.top_k, seed=self.args.seed)
        for folder in (ckpt, self.args.output_dir):
            path = os.path.join(folder, CALIBRATION_FILE)
            if os.path.isfile(path):
                cal = Calibration.load(path)
                if cal.spec != spec:
                    raise UserError(
                        f"{path} was calibrated with {_differences(cal.spec, spec)}; resume with the same "
                        "calibration options or pass --tau"
                    )
                self.tau, self.calibration = cal.tau, cal
                logger.info("resuming with tau=%.6f from %s (not recalibrated)", cal.tau, path)
                return
        raise UserError(
            f"cannot resume SED-SFT: no {CALIBRATION_FILE} in {ckpt} or {self.args.output_dir}; pass --tau <value>"
        )

    def calibrate(self, model) -> Calibration:
        """tau on ``model`` (the initial weights) by :func:`sedsft.calibrate.calibrate`; the same on every process.

        The examples are the training data as given: raw records are tokenized with this run's
        system_prompt / max_length / overflow (as ``sedsft calibrate`` tokenizes them), tokenized rows are
        used as they are.
        """
        args, data = self.args, self._calibration_data
        columns = getattr(data, "column_names", None) or []
        if "input_ids" not in columns or "labels" not in columns:
            data = LazyTokenized(
                data,
                self.processing_class,
                system_prompt=args.system_prompt,
                max_length=self.token_limit.tokens,
                overflow=args.overflow,
                limit_reason=self.token_limit.reason,
            )
        return calibrate(
            model,
            data,
            args.calibration_spec(top_k=args.top_k, seed=args.seed),
            pad_token_id=self.processing_class.pad_token_id,
            accelerator=self.accelerator,
            impl=args.fused_impl,
            source={"dataset": args.dataset_path},
        )

    def _save_calibration(self, folder: str) -> None:
        if self.calibration is not None and self.accelerator.is_main_process:
            self.calibration.save(os.path.join(folder, CALIBRATION_FILE))

    # ---- loss and logging -------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        if self.args.needs_tau and self.tau is None:
            self.calibration = self.calibrate(model)
            self.tau = self.calibration.tau
            self._save_calibration(self.args.output_dir)
            spec = self.calibration.spec
            logger.info(
                "calibrated tau=%.6f on %d positions (%d examples, preset=%s, top_k=%d, r=%.2f)",
                self.tau,
                self.calibration.num_positions,
                self.calibration.num_sequences,
                spec.preset,
                spec.top_k,
                spec.mask_ratio,
            )
        options = self.args.objective_options(tau=self.tau)
        labels = inputs["labels"]
        # everything the collator made except the labels: ids with attention_mask, or with position_ids
        # (and varlen metadata) for padding-free batches
        model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        if self.loss_impl == "fused":
            out = fused_forward_loss(
                model,
                {**model_inputs, "labels": labels},
                objective=self.args.objective,
                num_items_in_batch=num_items_in_batch,
                return_stats=True,
                impl=self.args.fused_impl,
                **options,
            )
        else:
            logits = model(**model_inputs, use_cache=False).logits
            out = objective_loss(
                self.args.objective,
                logits,
                labels,
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
        if mode == "train":  # TRL's running token count (a padding-free row counts whole, as in TRL)
            mask = inputs.get("attention_mask")
            local = (
                mask.sum()
                if mask is not None
                else torch.tensor(inputs["input_ids"].numel(), device=labels.device)
            )
            self._total_train_tokens += (
                int(self.accelerator.reduce(local, reduction="sum").item()) // self._tp_size
            )
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        if return_outputs:
            with torch.no_grad():
                outputs = model(**model_inputs)
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


def _differences(saved, wanted) -> str:
    """``field=saved (now wanted)`` for each field where two calibration specs differ."""
    if saved is None:
        return "a given tau (--tau)"
    diff = [
        f"{k}={v!r} (now {getattr(wanted, k)!r})" for k, v in vars(saved).items() if getattr(wanted, k) != v
    ]
    return ", ".join(diff)


def _refuse_lora_on_head(model, peft_config) -> None:
    """TRL 1.16's SFTTrainer raises on a LoRA adapter on the output head (its own fused head reads
    ``lm_head.weight``), before sedsft could choose the logits path: say so in one line, with the alternative."""
    if peft_config is None or isinstance(model, str) or not hasattr(peft_config, "target_modules"):
        return
    from peft.tuners.tuners_utils import check_target_module_exists

    head = model.get_output_embeddings()
    name = next((n for n, m in model.named_modules() if m is head), None)
    if name is not None and check_target_module_exists(peft_config, name):
        raise UserError(
            f"a LoRA adapter on the output head ({name}) is not supported by TRL's SFTTrainer; drop it from "
            f"--lora_target_modules, or train the whole head with --lora_modules_to_save {name} (fused)"
        )


# ---- packing and padding-free batches ------------------------------------------------------------

# Transformers (5.x) keeps packed documents apart given position_ids and no attention_mask: eager, sdpa and
# flex build a block-diagonal causal mask from the position_ids (masking_utils.find_packed_sequence_indices),
# the flash kernels run varlen attention from them (or from cu_seq_lens_q/k).
PACKED_ATTENTION = ("eager", "sdpa", "flex_attention", "flash_attention_2", "flash_attention_3")


def _check_padding_free(args, *, custom_collator: bool) -> bool:
    """Whether batches are padding-free (``packing`` or ``padding_free``); a clear error for what cannot work."""
    if not (args.packing or args.padding_free):
        return False
    flag = "--packing" if args.packing else "--padding_free"
    if custom_collator:
        raise UserError(
            f"{flag} uses sedsft's own collator (position_ids per document); do not pass data_collator"
        )
    if args.packing and args.packing_strategy not in ("bfd", "bfd_split"):
        raise UserError(
            f"--packing_strategy {args.packing_strategy!r} cuts documents and lets them attend across boundaries; "
            "use bfd (whole documents) or bfd_split"
        )
    if args.packing and args.max_length is None:
        raise UserError("--packing needs --max_length: the length of one packed sequence")
    return True


def check_packed_attention(model) -> None:
    """Refuse padding-free batches with an attention implementation that may let documents see each other."""
    from sedsft.losses.head import unwrap

    inner = unwrap(model)
    impl = getattr(inner.config, "_attn_implementation", None)
    hub_flash = (
        isinstance(impl, str) and "flash" in impl and "paged" not in impl
    )  # kernels-community/flash-attn*
    if impl not in PACKED_ATTENTION and not hub_flash:
        raise UserError(
            f"--packing / --padding_free need an attention implementation that honours position_ids "
            f"({', '.join(PACKED_ATTENTION)}); the model uses {impl!r}: pass --attn_implementation sdpa"
        )
    if not type(inner).__module__.startswith("transformers."):
        raise UserError(
            f"--packing / --padding_free: {type(inner).__name__} is remote code, which may not keep packed documents "
            "apart; train without packing"
        )


@contextlib.contextmanager
def _trl_packing_off(args):
    """Hide packing/padding_free from SFTTrainer.__init__ while it runs.

    TRL refuses a custom collator with padding-free batches and, without packing, a max_length it would not
    enforce; both checks are about TRL's own data preparation, which sedsft replaces (``sedsft.data`` enforces
    max_length, ``SFTCollator`` writes position_ids per document).
    """
    saved = args.packing, args.padding_free
    args.packing = args.padding_free = False
    try:
        yield
    finally:
        args.packing, args.padding_free = saved
