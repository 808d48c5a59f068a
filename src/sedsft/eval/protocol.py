"""Sampling protocols: the paper's per-benchmark settings, and how CLI overrides apply to them.

The paper (following Qwen2.5-Math's evaluation) reports Avg@8 at temperature 0.7 on the small
competition sets and one sample at temperature 1.0 elsewhere. It does not state top_p or the token
budget; we use top_p = 1.0 (plain sampling) and 4,096 new tokens (docs/evaluation.md).
"""

from __future__ import annotations

from dataclasses import replace

from sedsft.errors import UserError
from sedsft.eval.generation import SamplingConfig

_AVG8 = SamplingConfig(temperature=0.7, top_p=1.0, max_new_tokens=4096, n=8)
_ONE = SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=4096, n=1)

PAPER_PROTOCOL: dict[str, SamplingConfig] = {
    "aime24": _AVG8,
    "aime25": _AVG8,
    "amc23": _AVG8,
    "gsm8k": _ONE,
    "math": _ONE,
    "gaokao2023en": _ONE,
    "olympiadbench": _ONE,
    "college_math": _ONE,
}

PROTOCOLS = ("paper", "greedy")


def resolve_sampling(
    names: list[str],
    *,
    protocol: str = "paper",
    n: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    max_new_tokens: int | None = None,
    seed: int = 0,
) -> dict[str, SamplingConfig]:
    """Per-benchmark sampling: the protocol's settings with any given override applied to all."""
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
    out = {}
    for name in names:
        if protocol == "greedy":
            base = SamplingConfig(temperature=0.0, top_p=1.0, max_new_tokens=4096, n=1)
        elif name in PAPER_PROTOCOL:
            base = PAPER_PROTOCOL[name]
        else:
            raise UserError(f"the paper protocol has no setting for {name!r}; pass a SamplingConfig for it")
        overrides = {"n": n, "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens}
        out[name] = replace(base, seed=seed, **{k: v for k, v in overrides.items() if v is not None})
    return out
