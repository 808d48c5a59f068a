"""``SEDSFTConfig``: TRL's ``SFTConfig`` plus the objective, its options, tau calibration and the data files.

Every field carries ``metadata={"help": ...}``, so ``sedsft sft --help`` documents it and a YAML config
(``--config file.yaml``) can set it. The objective's options are not restated here: each option an
objective declares in the registry (:mod:`sedsft.losses.objectives`: its name, type, default, help) becomes
one field, validated by the registry at construction; an option that the chosen objective does not use
is an error rather than ignored. The calibration fields are :class:`sedsft.calibrate.CalibrationOptions`,
shared with ``sedsft calibrate``.
"""

from __future__ import annotations

import typing
from dataclasses import MISSING, dataclass, field, fields, make_dataclass

from trl import SFTConfig

from sedsft.calibrate import CalibrationOptions, check_tau
from sedsft.cli_parse import SYSTEM_PROMPT_HELP, overflow_field, system_prompt_value
from sedsft.errors import UserError, check_finite_fields
from sedsft.limits import check_overflow
from sedsft.losses import IMPLS, OBJECTIVES, get_objective
from sedsft.prompts import DEFAULT_SYSTEM_PROMPT

LOSS_IMPLS = ("auto", "fused", "logits")
_TAU_PLACEHOLDER = 0.5  # stands in for a tau still to be calibrated when validating the options


def _option_fields() -> tuple[list[tuple], dict[str, str], dict[str, object]]:
    """From the registry: the config fields (objective first), field name -> option name, field -> default.

    An option several objectives declare (top_k) is one field. A required option (SED's tau) becomes
    ``T | None`` with default None: the trainer supplies it (tau is calibrated).
    """
    declared: dict[str, tuple] = {}  # field name -> (option, its type, the objectives that take it)
    for obj in OBJECTIVES.values():
        hints = typing.get_type_hints(obj.options_cls)
        fixed = {k for k, _ in obj.fixed}
        for opt in fields(obj.options_cls):
            if opt.name in fixed:
                continue
            name = opt.metadata.get("flag", opt.name)
            first = declared.setdefault(name, (opt, hints[opt.name], []))
            if (first[0].name, first[0].default) != (opt.name, opt.default):
                raise TypeError(f"the registry declares option {name!r} twice with different defaults")
            first[2].append(obj.name)
    objective = field(
        default="sed",
        metadata={
            "help": f"training objective, one of: {', '.join(OBJECTIVES)}",
            "choices": list(OBJECTIVES),
        },
    )
    specs: list[tuple] = [("objective", str, objective)]
    for name, (opt, typ, users) in declared.items():
        required = opt.default is MISSING
        meta = {"help": f"{opt.metadata.get('help', opt.name)} (objectives: {', '.join(users)})"}
        if "choices" in opt.metadata:
            meta["choices"] = list(opt.metadata["choices"])
        default = None if required else opt.default
        specs.append((name, typ | None if required else typ, field(default=default, metadata=meta)))
    names = {name: opt.name for name, (opt, _, _) in declared.items()}
    defaults = {name: f.default for name, _, f in specs[1:]}
    return specs, names, defaults


_SPECS, _OPTION_NAMES, _DEFAULTS = _option_fields()

ObjectiveFields = make_dataclass("ObjectiveFields", _SPECS)
ObjectiveFields.__module__ = __name__
ObjectiveFields.__doc__ = "The objective and every option the registry declares, one field each (generated)."


def option_fields(options: dict) -> dict:
    """SEDSFTConfig fields for objective options named as the registry names them (``{"lam": 2.0}``)."""
    by_option = {opt: name for name, opt in _OPTION_NAMES.items()}
    unknown = sorted(set(options) - set(by_option))
    if unknown:
        raise UserError(
            f"no SEDSFTConfig field for objective option(s) {unknown}; known: {sorted(by_option)}"
        )
    return {by_option[k]: v for k, v in options.items()}


@dataclass
class SEDSFTConfig(CalibrationOptions, ObjectiveFields, SFTConfig):
    """Training arguments for :class:`~sedsft.train.SEDSFTTrainer` (all of ``SFTConfig`` plus the fields below)."""

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
            "help": "implementation of the fused engine: auto (on CUDA the chunked engine where its logits "
            "buffer fits the memory budget, else recompute, else torch; torch elsewhere), chunked, recompute, "
            "triton (the best of the two Triton engines) or torch",
            "choices": list(IMPLS),
        },
    )
    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "training data: a local .jsonl/.json/.parquet file or a folder of them",
            "aliases": ["--data"],
            "manifest": False,  # a run input (path and fingerprint)
        },
    )
    eval_dataset_path: str | None = field(
        default=None,
        metadata={"help": "optional evaluation data, same formats as dataset_path", "manifest": False},
    )
    system_prompt: str | None = field(default=DEFAULT_SYSTEM_PROMPT, metadata={"help": SYSTEM_PROMPT_HELP})
    overflow: str = overflow_field("truncate")  # the one --overflow (sedsft.cli_parse)

    def __post_init__(self):
        self.system_prompt = system_prompt_value(self.system_prompt)
        check_finite_fields(self)  # NaN or infinity means nothing in any float option
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
        if self.loss_impl not in LOSS_IMPLS:
            raise UserError(f"--loss_impl must be one of {LOSS_IMPLS}, got {self.loss_impl!r}")
        if self.fused_impl not in IMPLS:
            raise UserError(f"--fused_impl must be one of {IMPLS}, got {self.fused_impl!r}")
        if self.fused_impl not in ("auto", "torch"):  # a GPU engine: the loss and tau's calibration run on it
            self._check_gpu_engine_runs()
        check_overflow(self.overflow)
        accepted = self._accepted_options()
        for name, option in _OPTION_NAMES.items():
            if option not in accepted and getattr(self, name) != _DEFAULTS[name]:
                raise UserError(
                    f"--{name} does not apply to objective {self.objective!r} (its options: "
                    f"{', '.join(sorted(accepted)) or 'none'}); remove it or pick another --objective"
                )
        if self.tau is not None:
            check_tau(self.tau)
        options = self.objective_options(tau=self.tau if self.tau is not None else _TAU_PLACEHOLDER)
        for name, option in _OPTION_NAMES.items():  # one option at a time, so the message names its flag
            if option in options:
                try:
                    obj.options(**{**self._default_options(tau=_TAU_PLACEHOLDER), option: options[option]})
                except (ValueError, TypeError) as e:
                    raise UserError(f"--{name}: {e}") from None
        self._check_calibration_options()

    def _check_gpu_engine_runs(self) -> None:
        """Refuse ``--fused_impl chunked|recompute|triton`` now where the engine would refuse it at the first step."""
        import torch

        from sedsft.losses.fused import resolve_impl

        gpu = torch.cuda.is_available() and not self.use_cpu
        device = torch.device("cuda" if gpu else "cpu")
        dtype = torch.bfloat16 if self.bf16 else torch.float16 if self.fp16 else torch.float32
        try:
            resolve_impl(self.fused_impl, device, dtype, top_k=self.top_k or 1)
        except ValueError as e:
            raise UserError(f"--fused_impl: {e}") from None

    def _check_calibration_options(self) -> None:
        """A calibration rule must be valid where tau is calibrated, and is refused beside a given --tau.

        (An objective without tau ignores them, so that one config can serve every objective.)
        """
        if self.calibrates_tau:
            self.calibration_spec(top_k=self.top_k, seed=self.seed)
        elif self.needs_tau and self.calibration_options_given():
            name = self.calibration_options_given()[0]
            raise UserError(
                f"give --tau (a fixed threshold) or --{name} (tau calibrated), not both; unset one "
                f"({name}: null in a YAML config)"
            )

    def _accepted_options(self) -> set[str]:
        obj = get_objective(self.objective)
        return {f.name for f in fields(obj.options_cls)} - {k for k, _ in obj.fixed}

    def _default_options(self, *, tau: float) -> dict:
        accepted = self._accepted_options()
        values = {_OPTION_NAMES[n]: d for n, d in _DEFAULTS.items() if _OPTION_NAMES[n] in accepted}
        return {**values, "tau": tau} if "tau" in values else values

    @property
    def needs_tau(self) -> bool:
        """Whether the objective takes a tau (SED-SFT with the mask)."""
        return "tau" in self._accepted_options()

    @property
    def calibrates_tau(self) -> bool:
        """Whether the trainer calibrates tau (the objective takes one and none is given)."""
        return self.needs_tau and self.tau is None

    def objective_options(self, *, tau: float | None = None) -> dict:
        """Keyword options for ``objective_loss`` / ``fused_linear`` (``tau`` replaces the configured one)."""
        accepted = self._accepted_options()
        out = {opt: getattr(self, name) for name, opt in _OPTION_NAMES.items() if opt in accepted}
        if "tau" in out:
            out["tau"] = tau if tau is not None else self.tau
            if out["tau"] is None:
                raise UserError("SED-SFT needs tau: pass --tau or let the trainer calibrate it")
        return out


def default_bf16_to_hardware(args) -> None:
    """TRL turns bf16 on unless told otherwise; where no GPU can run it, an unset bf16 means fp32.

    An explicit ``--bf16 true`` is left alone (and rejected by TrainingArguments on such a machine).
    """
    if args.bf16 is None and not args.fp16:
        import torch

        args.bf16 = bool(not args.use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported())
