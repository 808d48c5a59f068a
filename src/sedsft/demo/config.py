"""The demo's budgets: one frozen :class:`DemoConfig` fixes every stage's sizes and hyper-parameters.

Three presets: :meth:`DemoConfig.default` (every objective plus the lambda rows, 3 seeds: ``sedsft
demo``), :meth:`DemoConfig.quick` (CE and SED-SFT, one seed, smaller evaluation: ``sedsft demo
--quick``) and :meth:`DemoConfig.tiny` (the test suite's end-to-end run: it checks the plumbing, its
numbers mean nothing). Both real presets use the same packaged base model.

Fairness is structural: there is ONE set of SFT, RL and evaluation hyper-parameters, shared by every
row. The rows (:class:`Variant`) are objectives from the registry (:data:`sedsft.losses.OBJECTIVES`)
with their options at the registry's defaults, the paper's; the only exception is the lambda ablation,
SED-SFT with ``lam`` set to each value of ``sed_lambdas``, everything else unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field, replace

from sedsft.demo.base_model import BaseModelConfig
from sedsft.demo.world import SPLITS
from sedsft.errors import UserError
from sedsft.losses import OBJECTIVES, get_objective

_TAU_FOR_CHECKS = 0.5  # stands in for the tau SED-SFT calibrates, when options are validated


def registry_default(objective: str, option: str):
    """The registry's default of one option (the paper's value), e.g. ``("sed", "lam") -> 1.0``."""
    for f in dataclasses.fields(get_objective(objective).options_cls):
        if f.name == option and f.default is not dataclasses.MISSING:
            return f.default
    raise UserError(f"objective {objective!r} has no option {option!r} with a default")


@dataclass(frozen=True)
class Variant:
    """One row of the comparison: a registry objective, the options it changes from the registry's
    defaults (registry names, e.g. ``lam``), and trainer settings it changes (e.g. ``mask_ratio``)."""

    objective: str
    options: tuple[tuple[str, object], ...] = ()
    train: tuple[tuple[str, object], ...] = ()

    def __post_init__(self):
        obj = get_objective(self.objective)
        accepted = {f.name for f in dataclasses.fields(obj.options_cls)} - {k for k, _ in obj.fixed}
        tau = {"tau": _TAU_FOR_CHECKS} if "tau" in accepted else {}
        try:
            obj.options(**dict(self.options), **tau)
        except ValueError as e:
            raise UserError(f"{self.objective}: {e}") from None

    @property
    def key(self) -> str:
        """Stage-key and folder part: the objective, then each changed value (``sed_lam2``)."""
        changes = [*self.options, *self.train]
        return self.objective + "".join(
            f"_{k}{v:g}" if isinstance(v, float) else f"_{k}{v}" for k, v in changes
        )

    @property
    def label(self) -> str:
        changes = ", ".join(
            f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in [*self.options, *self.train]
        )
        return get_objective(self.objective).label + (f" ({changes})" if changes else "")

    def lam(self) -> float | None:
        """SED-SFT's lambda for this row (None for objectives without one)."""
        if "lam" not in {f.name for f in dataclasses.fields(get_objective(self.objective).options_cls)}:
            return None
        return float(dict(self.options).get("lam", registry_default(self.objective, "lam")))


def _floats(values) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class DemoConfig:
    """Every budget of one demo run (the base model's are in ``base``)."""

    name: str = field(default="default", metadata={"help": "preset name, shown in the report"})
    objectives: tuple[str, ...] = field(
        default=tuple(OBJECTIVES), metadata={"help": f"objectives compared: {', '.join(OBJECTIVES)}"}
    )
    sed_lambdas: tuple[float, ...] = field(
        default=(1.0, 2.0, 4.0),
        metadata={"help": "lambda ablation: a SED-SFT row per lambda, other options at the paper's defaults"},
    )
    seeds: int = field(default=3, metadata={"help": "seeds 0..N-1 of the SFT, RL and evaluation stages"})
    base: BaseModelConfig = field(default_factory=BaseModelConfig, metadata={"help": "stage 0 model"})
    data_seed: int = field(default=0, metadata={"help": "seed of the SFT, RL and evaluation problem sets"})
    # SFT (same for every row)
    sft_per_split: int = field(default=80, metadata={"help": "SFT problems per split (one 'left' solution)"})
    sft_steps: int = field(default=120, metadata={"help": "SFT optimizer steps"})
    sft_batch_size: int = field(default=32, metadata={"help": "SFT sequences per step"})
    sft_lr: float = field(default=1e-3, metadata={"help": "SFT peak learning rate (cosine, 10% warm-up)"})
    sft_logging_steps: int = field(default=5, metadata={"help": "SFT log interval (training curves)"})
    calibration_examples: int = field(default=200, metadata={"help": "SFT examples scored to calibrate tau"})
    # offline filtering with the base model, then GRPO (same for every row)
    rl_per_split: int = field(
        default=80, metadata={"help": "RL candidate prompts per split, before filtering"}
    )
    rl_splits: tuple[str, ...] = field(
        default=("L4", "L5"),
        metadata={"help": "splits the RL prompts come from (the hard ones: SFT leaves the easy ones solved)"},
    )
    filter_n: int = field(default=8, metadata={"help": "samples per prompt when filtering (paper: 8)"})
    rl_steps: int = field(default=40, metadata={"help": "GRPO optimizer steps"})
    rl_prompts_per_step: int = field(default=8, metadata={"help": "prompts per GRPO step"})
    num_generations: int = field(default=8, metadata={"help": "GRPO group size (paper: 8)"})
    rl_lr: float = field(
        default=2e-4,
        metadata={"help": "GRPO learning rate (the paper's 1e-6 is for 7B models; chosen once, on CE)"},
    )
    rl_beta: float = field(
        default=0.0, metadata={"help": "GRPO KL coefficient (paper: 0, no reference model)"}
    )
    max_new_tokens: int = field(
        default=112,
        metadata={"help": "token budget of every sample (longest gold solution: 96 characters, ~90 tokens)"},
    )
    # evaluation (the paper's protocol)
    eval_per_split: int = field(
        default=96, metadata={"help": "held-out problems per split (L1 has 98 in all)"}
    )
    hard_splits: tuple[str, ...] = field(default=("L4", "L5"), metadata={"help": "Avg@k splits (AIME/AMC)"})
    hard_k: int = field(default=8, metadata={"help": "samples per problem on the hard splits (Avg@k)"})
    hard_temperature: float = field(default=0.7, metadata={"help": "temperature on the hard splits"})
    easy_temperature: float = field(default=1.0, metadata={"help": "temperature (1 sample) elsewhere"})
    gen_batch_size: int = field(default=128, metadata={"help": "sequences per generate call on the CPU"})
    analysis_examples: int = field(default=200, metadata={"help": "SFT examples scored for Fig. 3"})

    def __post_init__(self):
        for o in self.objectives:
            if o not in OBJECTIVES:
                raise UserError(f"unknown objective {o!r}; choose from {', '.join(OBJECTIVES)}")
        if len(set(self.objectives)) != len(self.objectives):
            raise UserError(f"objectives must be distinct, got {','.join(self.objectives)}")
        object.__setattr__(self, "sed_lambdas", _floats(self.sed_lambdas))
        for lam in self.sed_lambdas:
            if not (math.isfinite(lam) and lam >= 0):
                raise UserError(f"sed_lambdas must be finite numbers >= 0, got {lam}")
        for name in ("hard_splits", "rl_splits"):
            bad = [s for s in getattr(self, name) if s not in SPLITS]
            if bad or not getattr(self, name):
                raise UserError(f"{name}: unknown or no split {bad[:1]}; choose from {', '.join(SPLITS)}")
        for name in (
            "seeds",
            "sft_per_split",
            "sft_steps",
            "rl_per_split",
            "rl_steps",
            "eval_per_split",
            "hard_k",
        ):
            if isinstance(getattr(self, name), bool) or getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.num_generations < 2:
            raise UserError(
                f"num_generations must be >= 2 (GRPO compares samples), got {self.num_generations}"
            )

    def variants(self) -> list[Variant]:
        """The rows, in order: each objective at the registry's defaults, then the lambda ablation (the
        row whose lambda is the registry default is the plain ``sed`` row, run once)."""
        rows = [Variant(o) for o in self.objectives]
        default = registry_default("sed", "lam")
        for lam in self.sed_lambdas:
            rows.append(Variant("sed") if lam == default else Variant("sed", options=(("lam", lam),)))
        return list(dict.fromkeys(rows))

    def lambda_rows(self) -> list[Variant]:
        """The rows of the lambda ablation table, in ``sed_lambdas`` order."""
        return [
            v for v in self.variants() if v.objective == "sed" and not v.train and v.lam() in self.sed_lambdas
        ]

    def to_dict(self) -> dict:
        return asdict(self)

    def settings(self) -> dict:
        """What every stage's results depend on: the rows and seeds excepted (adding one reuses the rest)."""
        d = self.to_dict()
        for k in ("name", "objectives", "sed_lambdas", "seeds"):
            d.pop(k)
        return d

    def with_rows(self, *, objectives=None, sed_lambdas=None, seeds: int | None = None) -> DemoConfig:
        """The same budgets for other rows or seeds (None keeps the preset's)."""
        changes: dict = {}
        if objectives is not None:
            changes["objectives"] = tuple(objectives)
        if sed_lambdas is not None:
            changes["sed_lambdas"] = tuple(sed_lambdas)
        if seeds is not None:
            changes["seeds"] = seeds
        return replace(self, **changes)

    @classmethod
    def default(cls, **overrides) -> DemoConfig:
        return cls(**overrides)

    @classmethod
    def quick(cls, **overrides) -> DemoConfig:
        """CE vs SED-SFT, one seed, no lambda rows, a smaller evaluation; same base model and training."""
        base = dict(
            name="quick",
            objectives=("ce", "sed"),
            sed_lambdas=(),
            seeds=1,
            eval_per_split=48,
            hard_k=4,
            analysis_examples=100,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def tiny(cls, **overrides) -> DemoConfig:
        """The tests' end-to-end run: every objective and one extra lambda, a few steps each."""
        base = dict(
            name="tiny",
            sed_lambdas=(1.0, 4.0),
            seeds=1,
            base=BaseModelConfig.tiny(),
            sft_per_split=4,
            sft_steps=4,
            sft_batch_size=8,
            sft_logging_steps=1,
            calibration_examples=10,
            rl_per_split=2,
            filter_n=2,
            rl_steps=2,
            rl_prompts_per_step=2,
            num_generations=2,
            max_new_tokens=24,
            eval_per_split=2,
            hard_k=2,
            gen_batch_size=16,
            analysis_examples=8,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def preset(cls, name: str, **overrides) -> DemoConfig:
        presets = {"default": cls.default, "quick": cls.quick, "tiny": cls.tiny}
        if name not in presets:
            raise UserError(f"unknown demo preset {name!r}; choose from {', '.join(presets)}")
        return presets[name](**overrides)
