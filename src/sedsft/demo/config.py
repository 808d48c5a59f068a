"""The demo's budgets: one frozen :class:`DemoConfig` fixes every stage's sizes and hyper-parameters.

Three presets: :meth:`DemoConfig.default` (all five objectives, ``sedsft demo``), :meth:`DemoConfig.quick`
(CE and SED-SFT on smaller budgets, ``sedsft demo --quick``) and :meth:`DemoConfig.tiny` (the test
suite's end-to-end run: it checks the plumbing, its numbers mean nothing).

Fairness is structural: there is ONE set of SFT, RL and evaluation hyper-parameters, shared by every
objective; the only per-objective settings are each objective's own (SED's k, r, lambda; GEM's beta),
at the paper's defaults, never tuned here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

from sedsft.demo.base_model import BaseModelConfig
from sedsft.demo.world import SPLITS
from sedsft.errors import UserError
from sedsft.losses import OBJECTIVES

# The paper's comparison, in its table order.
ALL_OBJECTIVES: tuple[str, ...] = ("ce", "gem", "dft", "sed_nomask", "sed")
DISPLAY = {"ce": "CE", "gem": "GEM", "dft": "DFT", "sed_nomask": "SED-SFT w/o mask", "sed": "SED-SFT"}


@dataclass(frozen=True)
class DemoConfig:
    """Every budget of one demo run (the base model's are in ``base``)."""

    name: str = field(default="default", metadata={"help": "preset name, shown in the report"})
    objectives: tuple[str, ...] = field(default=ALL_OBJECTIVES, metadata={"help": "SFT objectives compared"})
    base: BaseModelConfig = field(default_factory=BaseModelConfig, metadata={"help": "stage 0 model"})
    data_seed: int = field(default=0, metadata={"help": "seed of the SFT, RL and evaluation problem sets"})
    # stage 1/2: SFT (same for every objective)
    sft_per_split: int = field(default=80, metadata={"help": "SFT problems per split (one 'left' solution)"})
    sft_steps: int = field(default=120, metadata={"help": "SFT optimizer steps"})
    sft_batch_size: int = field(default=32, metadata={"help": "SFT sequences per step"})
    sft_lr: float = field(default=1e-3, metadata={"help": "SFT peak learning rate (cosine, 10% warm-up)"})
    sft_logging_steps: int = field(default=5, metadata={"help": "SFT log interval (training curves)"})
    top_k: int = field(default=2, metadata={"help": "SED-SFT: k of P_topk (paper: 2)"})
    mask_ratio: float = field(default=0.7, metadata={"help": "SED-SFT: masking ratio r (paper: 0.7)"})
    lam: float = field(default=1.0, metadata={"help": "SED-SFT: lambda (paper: 1.0)"})
    calibration_examples: int = field(default=200, metadata={"help": "SFT examples scored to calibrate tau"})
    # stage 3: offline filtering with the base model, then GRPO (same for every objective)
    rl_per_split: int = field(
        default=40, metadata={"help": "RL candidate prompts per split, before filtering"}
    )
    filter_n: int = field(default=8, metadata={"help": "samples per prompt when filtering (paper: 8)"})
    rl_steps: int = field(default=40, metadata={"help": "GRPO optimizer steps"})
    rl_prompts_per_step: int = field(default=8, metadata={"help": "prompts per GRPO step"})
    num_generations: int = field(default=8, metadata={"help": "GRPO group size (paper: 8)"})
    rl_lr: float = field(default=1e-4, metadata={"help": "GRPO learning rate (paper 1e-6 is for 7B models)"})
    max_new_tokens: int = field(
        default=112,
        metadata={"help": "token budget of every sample (longest gold solution: 96 characters, ~90 tokens)"},
    )
    # stage 4: evaluation (the paper's protocol)
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
        unknown = [o for o in self.objectives if o not in OBJECTIVES]
        if unknown or not self.objectives:
            raise UserError(
                f"unknown objective {unknown[0] if unknown else '(none)'!r}; choose from {', '.join(ALL_OBJECTIVES)}"
            )
        if len(set(self.objectives)) != len(self.objectives):
            raise UserError(f"objectives must be distinct, got {','.join(self.objectives)}")
        bad = [s for s in self.hard_splits if s not in SPLITS]
        if bad:
            raise UserError(f"unknown split {bad[0]!r} in hard_splits; choose from {', '.join(SPLITS)}")
        for name in ("sft_per_split", "sft_steps", "rl_per_split", "rl_steps", "eval_per_split", "hard_k"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.num_generations < 2:
            raise UserError(
                f"num_generations must be >= 2 (GRPO compares samples), got {self.num_generations}"
            )

    def with_objectives(self, objectives: tuple[str, ...] | list[str]) -> DemoConfig:
        """The same budgets for another set of objectives (kept in the paper's order)."""
        wanted = list(dict.fromkeys(objectives))
        ordered = tuple(o for o in ALL_OBJECTIVES if o in wanted) + tuple(
            o for o in wanted if o not in ALL_OBJECTIVES
        )
        return replace(self, objectives=ordered)

    def to_dict(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        """What the outputs of a run depend on (the objectives list excepted: adding one reuses the rest)."""
        d = self.to_dict()
        d.pop("objectives")
        d.pop("name")
        return json.dumps(d, sort_keys=True)

    @classmethod
    def default(cls, **overrides) -> DemoConfig:
        return cls(**overrides)

    @classmethod
    def quick(cls, **overrides) -> DemoConfig:
        """CE vs SED-SFT on the quick base model, with smaller SFT, RL and evaluation budgets."""
        base = dict(
            name="quick",
            objectives=("ce", "sed"),
            base=BaseModelConfig.quick(),
            sft_steps=80,
            rl_per_split=24,
            rl_steps=20,
            eval_per_split=48,
            hard_k=4,
            analysis_examples=100,
            calibration_examples=100,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def tiny(cls, **overrides) -> DemoConfig:
        """The tests' end-to-end run: every objective, a few steps each, a handful of problems."""
        base = dict(
            name="tiny",
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
