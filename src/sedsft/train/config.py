"""``SEDSFTConfig``: TRL's ``SFTConfig`` plus the objective, its options, tau calibration and the data files.

Every field carries ``metadata={"help": ...}``, so ``sedsft sft --help`` documents it and a YAML config
(``--config file.yaml``) can set it. The objective's options are validated against the registry at
construction, and an option that the chosen objective does not use is an error rather than ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from trl import SFTConfig

from sedsft.calibrate import POSITIONS
from sedsft.data import OVERFLOW
from sedsft.errors import UserError
from sedsft.losses import IMPLS, OBJECTIVES, get_objective
from sedsft.prompts import DEFAULT_SYSTEM_PROMPT

LOSS_IMPLS = ("auto", "fused", "logits")

# config field -> the registry's option name; an objective receives the ones its options class declares
_OPTION_FIELDS = {"top_k": "top_k", "lam": "lam", "tau": "tau", "gem_beta": "beta", "gem_h": "h"}
_DEFAULTS = {"top_k": 2, "lam": 1.0, "tau": None, "gem_beta": 0.7, "gem_h": "linear"}
_TAU_PLACEHOLDER = 0.5  # stands in for a tau still to be calibrated when validating the options


@dataclass
class SEDSFTConfig(SFTConfig):
    """Training arguments for :class:`~sedsft.train.SEDSFTTrainer` (all of ``SFTConfig`` plus the fields below)."""

    objective: str = field(
        default="sed",
        metadata={
            "help": f"training objective, one of: {', '.join(OBJECTIVES)}",
            "choices": list(OBJECTIVES),
        },
    )
    top_k: int = field(
        default=_DEFAULTS["top_k"],
        metadata={"help": "k of the top-k probability mass P_topk (SED's mask; logged for every objective)"},
    )
    lam: float = field(
        default=_DEFAULTS["lam"], metadata={"help": "SED-SFT: weight lambda of the penalty (p - 1/2)^2"}
    )
    mask_ratio: float = field(
        default=0.7,
        metadata={
            "help": "SED-SFT: fraction r of positions left unpenalised; tau = (1 - r)-quantile of P_topk"
        },
    )
    tau: float | None = field(
        default=None,
        metadata={
            "help": "SED-SFT: mask threshold on P_topk; unset = calibrate on the initial model before training"
        },
    )
    gem_beta: float = field(default=_DEFAULTS["gem_beta"], metadata={"help": "GEM: temperature beta"})
    gem_h: str = field(
        default=_DEFAULTS["gem_h"],
        metadata={"help": "GEM: weight function h", "choices": ["linear", "logsigmoid"]},
    )
    loss_impl: str = field(
        default="auto",
        metadata={
            "help": "fused: loss owns the LM head, never builds [tokens, vocab] logits; logits: the model's own "
            "logits; auto: fused where possible, else logits with a warning (ZeRO-3, FSDP, soft-capped heads)",
            "choices": list(LOSS_IMPLS),
        },
    )
    fused_impl: str = field(
        default="auto",
        metadata={
            "help": "implementation of the fused engine: auto (Triton kernels on CUDA, torch elsewhere), "
            "triton or torch",
            "choices": list(IMPLS),
        },
    )
    calibration_examples: int = field(
        default=1000,
        metadata={
            "help": "tau calibration: training examples sampled (with `seed`) and scored by the initial model"
        },
    )
    calibration_positions: str = field(
        default="labels",
        metadata={
            "help": "tau calibration: 'labels' scores positions that predict a label token; 'all' every non-pad one",
            "choices": list(POSITIONS),
        },
    )
    calibration_max_tokens: int | None = field(
        default=None,
        metadata={"help": "tau calibration: cap on scored positions (in sample order); unset = all"},
    )
    dataset_path: str | None = field(
        default=None,
        metadata={"help": "training data: a local .jsonl/.json/.parquet file or a folder of them"},
    )
    eval_dataset_path: str | None = field(
        default=None, metadata={"help": "optional evaluation data, same formats as dataset_path"}
    )
    system_prompt: str | None = field(
        default=DEFAULT_SYSTEM_PROMPT,
        metadata={"help": "system message added to records without one; '' adds none"},
    )
    overflow: str = field(
        default="truncate",
        metadata={
            "help": "examples longer than max_length: 'truncate' the end or 'drop' them",
            "choices": list(OVERFLOW),
        },
    )

    def __post_init__(self):
        default_bf16_to_hardware(self)
        super().__post_init__()
        # data is tokenized by sedsft.data (completion-only labels); TRL's preparation must not run again
        self.dataset_kwargs = {**(self.dataset_kwargs or {}), "skip_prepare_dataset": True}
        self.validate_sedsft()

    def validate_sedsft(self) -> None:
        """Check our fields; each message names the flag to change."""
        try:
            obj = get_objective(self.objective)
        except ValueError as e:
            raise UserError(f"--objective: {e}") from None
        if not (0.0 <= float(self.mask_ratio) <= 1.0):
            raise UserError(f"--mask_ratio must be in [0, 1], got {self.mask_ratio}")
        if self.tau is not None and not (math.isfinite(float(self.tau)) and self.tau >= 0):
            raise UserError(f"--tau must be a finite number >= 0 (or unset to calibrate), got {self.tau}")
        if self.loss_impl not in LOSS_IMPLS:
            raise UserError(f"--loss_impl must be one of {LOSS_IMPLS}, got {self.loss_impl!r}")
        if self.fused_impl not in IMPLS:
            raise UserError(f"--fused_impl must be one of {IMPLS}, got {self.fused_impl!r}")
        if self.calibration_positions not in POSITIONS:
            raise UserError(
                f"--calibration_positions must be one of {POSITIONS}, got {self.calibration_positions!r}"
            )
        if self.overflow not in OVERFLOW:
            raise UserError(f"--overflow must be one of {OVERFLOW}, got {self.overflow!r}")
        if isinstance(self.calibration_examples, bool) or int(self.calibration_examples) < 1:
            raise UserError(f"--calibration_examples must be >= 1, got {self.calibration_examples}")
        if self.calibration_max_tokens is not None and self.calibration_max_tokens < 1:
            raise UserError(
                f"--calibration_max_tokens must be >= 1 or unset, got {self.calibration_max_tokens}"
            )
        accepted = self._accepted_options()
        for name, option in _OPTION_FIELDS.items():
            if option not in accepted and getattr(self, name) != _DEFAULTS[name]:
                raise UserError(
                    f"--{name} does not apply to objective {self.objective!r} (its options: "
                    f"{', '.join(sorted(accepted)) or 'none'}); remove it or pick another --objective"
                )
        try:
            obj.options(**self.objective_options(tau=self.tau if self.tau is not None else _TAU_PLACEHOLDER))
        except ValueError as e:
            raise UserError(f"invalid option for objective {self.objective!r}: {e}") from None

    def _accepted_options(self) -> set[str]:
        obj = get_objective(self.objective)
        return {f for f in obj.options_cls.__dataclass_fields__} - {k for k, _ in obj.fixed}

    @property
    def needs_tau(self) -> bool:
        """Whether the objective takes a tau (SED-SFT with the mask)."""
        return "tau" in self._accepted_options()

    def objective_options(self, *, tau: float | None = None) -> dict:
        """Keyword options for ``objective_loss`` / ``fused_linear`` (``tau`` replaces the configured one)."""
        accepted = self._accepted_options()
        values = {name: getattr(self, name) for name in _OPTION_FIELDS}
        values["tau"] = tau if tau is not None else self.tau
        out = {opt: values[name] for name, opt in _OPTION_FIELDS.items() if opt in accepted}
        if "tau" in out and out["tau"] is None:
            raise UserError("SED-SFT needs tau: pass --tau or let the trainer calibrate it")
        return out


def default_bf16_to_hardware(args) -> None:
    """TRL turns bf16 on unless told otherwise; where no GPU can run it, an unset bf16 means fp32.

    An explicit ``--bf16 true`` is left alone (and rejected by TrainingArguments on such a machine).
    """
    if args.bf16 is None and not args.fp16:
        import torch

        args.bf16 = bool(not args.use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported())
