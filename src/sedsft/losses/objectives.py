"""The paper's objectives, each a few lines over per-token statistics, and the registry that names them.

Every objective is a per-token loss written in terms of a :class:`TokenTerms` (gold logit, log-partition,
top-k mass, and for GEM a weighted logit sum). Autograd through those few ``[N]`` tensors gives each
token's coefficients, and the logit gradient is always ``g_lse * softmax(z) + g_w * c + g_gold * onehot(y)``
-- which is why one engine (``fused.py``) can serve every objective without materialising ``[N, V]``.

    CE       -log p
    DFT      -sg(p) log p                                   (Wu et al., dynamic fine-tuning)
    SED      -log p + lam * M * (p - 1/2)^2,  M = 1[P_topk < tau]   (Chen, Liu, Meng 2026, Eq. 1)
    GEM      -sum_v c_v (log p - log pi_v),  c = sg(softmax(z / beta) * w),  w = 1 or sigmoid(0.01 (z_v - z_y))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import torch
from torch import Tensor

DEFAULT_TOP_K = 2  # the paper's k; also the k whose mass is logged for objectives without a mask


@dataclass
class TokenTerms:
    """Per-token statistics of the next-token distribution at the N kept positions; each is ``[N]``.

    ``gold``, ``lse`` and ``weighted`` may carry gradient (they are linear or log-sum-exp in the logits);
    the rest are measurements without gradient.
    """

    gold: Tensor  # z_y, the gold token's logit
    lse: Tensor  # log sum_v exp(z_v)
    topk_mass: Tensor  # P_topk = sum of the k largest probabilities (no grad)
    weighted: Tensor | None = None  # sum_v c_v z_v with c detached (GEM only)
    weight_sum: Tensor | None = None  # sum_v c_v (no grad; GEM only)

    @property
    def logp(self) -> Tensor:
        return self.gold - self.lse


# ---- GEM's per-vocabulary weights (the one place an objective looks at the whole distribution) ------


def _gem_linear(z: Tensor, gold: Tensor) -> Tensor | None:
    return None  # w = 1: c is softmax(z / beta) itself


def _gem_logsigmoid(z: Tensor, gold: Tensor) -> Tensor:
    return torch.sigmoid(0.01 * (z - gold[:, None]))  # [n, V]


GEM_WEIGHTS: dict[str, Callable[[Tensor, Tensor], Tensor | None]] = {
    "linear": _gem_linear,
    "logsigmoid": _gem_logsigmoid,
}


# ---- options: one frozen dataclass per objective, validated on construction -------------------------


# Each option's metadata is its declaration for the trainer and the CLI: "help", and optionally "flag"
# (the config field / CLI flag when the option's own name is too generic) and "choices".
_TOP_K_HELP = "k of the top-k probability mass P_topk (SED-SFT's mask; logged for every objective)"


@dataclass(frozen=True)
class CEOptions:
    top_k: int = field(default=DEFAULT_TOP_K, metadata={"help": _TOP_K_HELP})  # only for the logged mass

    def __post_init__(self):
        _check_top_k(self.top_k)


@dataclass(frozen=True)
class DFTOptions(CEOptions):
    pass


@dataclass(frozen=True)
class SEDOptions:
    # mask threshold on P_topk (calibrated); +inf = penalise every token (w/o mask)
    tau: float = field(
        metadata={
            "help": "SED-SFT: mask threshold on P_topk (penalty where P_topk < tau); unset = calibrated on the "
            "initial model before training (see --mask_ratio, --calibration_preset)"
        }
    )
    top_k: int = field(default=DEFAULT_TOP_K, metadata={"help": _TOP_K_HELP})
    lam: float = field(default=1.0, metadata={"help": "SED-SFT: weight lambda of the penalty (p - 1/2)^2"})

    def __post_init__(self):
        _check_top_k(self.top_k)
        tau = float(self.tau)
        if math.isnan(tau):
            raise ValueError("tau is NaN; calibrate it (sedsft calibrate) or pass a number in [0, 1]")
        if not (self.lam >= 0 and math.isfinite(self.lam)):
            raise ValueError(f"lam must be a finite number >= 0, got {self.lam}")
        object.__setattr__(self, "tau", tau)


@dataclass(frozen=True)
class GEMOptions:
    beta: float = field(default=0.7, metadata={"help": "GEM: temperature beta", "flag": "gem_beta"})
    h: str = field(
        default="linear",
        metadata={"help": "GEM: weight function h", "flag": "gem_h", "choices": list(GEM_WEIGHTS)},
    )
    top_k: int = field(default=DEFAULT_TOP_K, metadata={"help": _TOP_K_HELP})

    def __post_init__(self):
        _check_top_k(self.top_k)
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise ValueError(f"beta must be a finite number > 0, got {self.beta}")
        if self.h not in GEM_WEIGHTS:
            raise ValueError(f"GEM h must be one of {sorted(GEM_WEIGHTS)}, got {self.h!r}")


def _check_top_k(k) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {k!r}")


# ---- per-token losses ----------------------------------------------------------------------------


def ce_loss(t: TokenTerms, o: CEOptions) -> Tensor:
    return -t.logp


def dft_loss(t: TokenTerms, o: DFTOptions) -> Tensor:
    p = t.logp.exp().detach()  # sg(p): DFT rescales CE by the model's own gold probability
    return -p * t.logp


def sed_mask(t: TokenTerms, o: SEDOptions) -> Tensor:
    """M_t = 1[P_topk < tau]: positions with room to explore. An indicator: no gradient."""
    return (t.topk_mass.detach() < o.tau).to(t.lse.dtype)


def sed_penalty(t: TokenTerms, o: SEDOptions) -> Tensor:
    """The diversity-encouraging term lam * M * (p - 1/2)^2 (gradient flows through p only)."""
    p = t.logp.exp()
    return o.lam * sed_mask(t, o) * (p - 0.5) ** 2


def sed_loss(t: TokenTerms, o: SEDOptions) -> Tensor:
    return -t.logp + sed_penalty(t, o)


# ---- effective gradient weights: d loss / d z = w_t * (softmax(z) - onehot(y)) where such a w_t exists ----


def ce_weight(t: TokenTerms, o: CEOptions) -> Tensor:
    return torch.ones_like(t.lse)


def dft_weight(t: TokenTerms, o: DFTOptions) -> Tensor:
    return t.logp.exp().detach()


def sed_weight(t: TokenTerms, o: SEDOptions) -> Tensor:
    """w = 1 - 2 lam M p (p - 1/2): below 0 (the update lowers p) only where lam > 1 and p > p*(lam)."""
    p = t.logp.exp().detach()
    return 1 - 2 * o.lam * sed_mask(t, o) * p * (p - 0.5)


def gem_loss(t: TokenTerms, o: GEMOptions) -> Tensor:
    # -sum_v c_v (log p - log pi_v) = -sum_v c_v (z_y - z_v): the log-partition cancels.
    return t.weighted - t.weight_sum * t.gold


# ---- the registry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Objective:
    name: str
    loss: Callable[[TokenTerms, object], Tensor]  # per-token loss [N]
    options_cls: type
    fixed: tuple[tuple[str, object], ...] = ()  # options the variant pins (sed_nomask: tau = inf)
    description: str = ""
    label: str = ""  # short name for tables and figures (CE, SED-SFT, ...)
    mask: Callable[[TokenTerms, object], Tensor] | None = None  # M_t, logged as the mask rate
    penalty: Callable[[TokenTerms, object], Tensor] | None = None  # the extra term, logged as de_penalty
    # w_t with d loss / d z = w_t (softmax(z) - onehot(y)); None where the gradient is no multiple of CE's (GEM)
    weight: Callable[[TokenTerms, object], Tensor] | None = None

    def options(self, **kwargs):
        """Validated options; unknown names fail with the list of known ones."""
        allowed = {f.name for f in fields(self.options_cls)} - {k for k, _ in self.fixed}
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise ValueError(
                f"objective {self.name!r} has no option(s) {unknown}; its options are {sorted(allowed) or 'none'}"
            )
        return self.options_cls(**kwargs, **dict(self.fixed))

    @property
    def uses_gem_weights(self) -> bool:
        return self.options_cls is GEMOptions


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in [
        Objective(
            "ce", ce_loss, CEOptions, description="cross-entropy (standard SFT)", label="CE", weight=ce_weight
        ),
        Objective(
            "dft",
            dft_loss,
            DFTOptions,
            description="dynamic fine-tuning: -sg(p) log p",
            label="DFT",
            weight=dft_weight,
        ),
        Objective("gem", gem_loss, GEMOptions, description="GEM entropic distribution matching", label="GEM"),
        Objective(
            "sed",
            sed_loss,
            SEDOptions,
            description="SED-SFT: CE + lam*M*(p-1/2)^2 where P_topk < tau",
            label="SED-SFT",
            mask=sed_mask,
            penalty=sed_penalty,
            weight=sed_weight,
        ),
        Objective(
            "sed_nomask",
            sed_loss,
            SEDOptions,
            (("tau", math.inf),),
            description="SED-SFT without the mask (M = 1 everywhere)",
            label="SED-SFT w/o mask",
            mask=sed_mask,
            penalty=sed_penalty,
            weight=sed_weight,
        ),
    ]
}


def get_objective(name: str) -> Objective:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}") from None
