"""tau calibration: the one loop that scores a data sample with the initial model and picks tau.

SED-SFT penalises a position only when its top-k mass P_topk is below tau; tau is read off the
distribution of P_topk over a sample of the data, scored by the model before training. Everything that
determines tau besides the model and the data is a :class:`CalibrationSpec`, saved with the value. Two
presets (``--calibration_preset``) fill it:

- ``paper`` (default): a seeded random sample of 1000 records, the positions that predict a label token,
  the mask's own k, and tau = the exact (1 - r)-quantile with numpy's default linear interpolation.
- ``authors``: the rule of the authors' released code (pppa2019/SED-SFT, ``compute_cumsum_threshold``):
  the first 100 records in file order, each scored alone (no padding), every position of the sequence,
  k = 10 whatever the mask's k, P_topk in the dtype of the model's logits, and the order statistic
  ``sorted(values)[-int(r * n)]``.

Each field can also be set on its own (``--calibration_examples``, ``--calibration_positions``,
``--calibration_top_k``, ``--calibration_batch_size``, ``--calibration_max_tokens``). ``sedsft sft`` and
``sedsft calibrate`` both call :func:`calibrate`, so the same data, model and options give the same tau.
Every process of a distributed run scores whole batches of the one sample and gets the same value.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import Tensor

from .errors import UserError, check_choice, check_count, check_number
from .io import atomic_write_json, read_json
from .prompts import DEFAULT_SYSTEM_PROMPT
from .scoring import POSITIONS, ScoredPositions, check_top_k, eval_mode, score_batch

CALIBRATION_FILE = "sedsft_calibration.json"
DEFAULT_SEED = 42  # TrainingArguments' default seed: sedsft calibrate draws what sedsft sft draws
DEFAULT_MASK_RATIO = 0.7  # the paper's r
DEFAULT_PRESET = "paper"
SAMPLES = ("random", "first")  # a seeded random sample of records, or the first ones in file order
STATISTICS = ("quantile", "order")  # numpy-linear (1 - r)-quantile, or the released code's order statistic
_SUMMARY = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)

# preset -> the spec fields it sets; top_k None means the mask's own k
PRESETS: dict[str, dict] = {
    "paper": dict(
        examples=1000,
        sample="random",
        positions="labels",
        top_k=None,
        statistic="quantile",
        batch_size=8,
        round_to_logits=False,
    ),
    "authors": dict(
        examples=100,
        sample="first",
        positions="all",
        top_k=10,
        statistic="order",
        batch_size=1,
        round_to_logits=True,
    ),
}


@dataclass(frozen=True)
class CalibrationSpec:
    """Everything besides the model and the data that determines tau; saved with it, a resume must match."""

    top_k: int  # k of the P_topk that is scored
    mask_ratio: float  # r: the share of scored positions that tau leaves unpenalised
    preset: str = DEFAULT_PRESET
    examples: int = 1000  # records sampled
    sample: str = "random"  # see SAMPLES
    seed: int = DEFAULT_SEED
    positions: str = "labels"  # see sedsft.scoring.POSITIONS
    statistic: str = "quantile"  # see STATISTICS
    batch_size: int = 8  # sequences per forward pass (part of the spec: padding can move the last float bits)
    round_to_logits: bool = False  # P_topk rounded to the logits' dtype, as a softmax in that dtype gives it
    max_tokens: int | None = None  # cap on scored positions, in sample order

    def __post_init__(self):
        object.__setattr__(self, "mask_ratio", check_mask_ratio(self.mask_ratio))
        check_top_k(self.top_k, name="the calibration's top_k (top_k, or calibration_top_k)")
        check_choice("calibration_preset", self.preset, tuple(PRESETS))
        check_choice("calibration_positions", self.positions, POSITIONS)
        check_choice("sample", self.sample, SAMPLES)
        check_choice("statistic", self.statistic, STATISTICS)
        check_count("calibration_examples", self.examples)
        check_count("calibration_batch_size", self.batch_size)
        check_count("calibration_max_tokens", self.max_tokens, allow_none=True)
        check_number("seed", self.seed, integer=True)

    @classmethod
    def from_preset(
        cls,
        preset: str = DEFAULT_PRESET,
        *,
        top_k: int,
        mask_ratio: float,
        seed: int = DEFAULT_SEED,
        examples: int | None = None,
        positions: str | None = None,
        calibration_top_k: int | None = None,
        batch_size: int | None = None,
        max_tokens: int | None = None,
    ) -> CalibrationSpec:
        """The preset's rule; each argument given (not None) replaces the preset's value. ``top_k``: the mask's k."""
        rule = dict(PRESETS[check_choice("calibration_preset", preset, tuple(PRESETS))])
        rule["top_k"] = rule["top_k"] or top_k
        given = dict(examples=examples, positions=positions, top_k=calibration_top_k, batch_size=batch_size)
        rule.update({k: v for k, v in given.items() if v is not None})
        return cls(preset=preset, mask_ratio=mask_ratio, seed=seed, max_tokens=max_tokens, **rule)


@dataclass
class CalibrationOptions:
    """The calibration options of ``sedsft sft`` (:class:`~sedsft.train.SEDSFTConfig`) and ``sedsft calibrate``."""

    mask_ratio: float | None = field(
        default=None,
        metadata={
            "help": f"SED-SFT: fraction r of scored positions left unpenalised (tau is picked so that the positions "
            f"with P_topk >= tau make up that share); unset = {DEFAULT_MASK_RATIO}; not with --tau"
        },
    )
    calibration_preset: str | None = field(
        default=None,
        metadata={
            "help": "tau calibration rule: 'paper' (the default: seeded random sample, label positions, the mask's "
            "k, linear quantile) or 'authors' (the released code's: first 100 records, all positions, k = 10, "
            "order statistic); see docs/objectives.md",
            "choices": list(PRESETS),
        },
    )
    calibration_examples: int | None = field(
        default=None,
        metadata={"help": "tau calibration: records scored; unset = the preset's (paper 1000, authors 100)"},
    )
    calibration_positions: str | None = field(
        default=None,
        metadata={
            "help": "tau calibration: 'labels' scores positions that predict a label token, 'all' every non-pad "
            "one; unset = the preset's (paper labels, authors all)",
            "choices": list(POSITIONS),
        },
    )
    calibration_top_k: int | None = field(
        default=None,
        metadata={
            "help": "tau calibration: k of the scored P_topk; unset = the preset's (paper --top_k, authors 10)"
        },
    )
    calibration_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "tau calibration: sequences per forward pass; unset = the preset's (paper 8, authors 1)"
        },
    )
    calibration_max_tokens: int | None = field(
        default=None,
        metadata={"help": "tau calibration: cap on scored positions (in sample order); unset = all"},
    )

    def calibration_options_given(self) -> list[str]:
        """The calibration options set (not None): with a given tau, each is a conflict."""
        return [f.name for f in fields(CalibrationOptions) if getattr(self, f.name) is not None]

    def calibration_spec(self, *, top_k: int, seed: int) -> CalibrationSpec:
        """The resolved rule for the mask's ``top_k`` and the run's ``seed`` (validated: one-line errors)."""
        return CalibrationSpec.from_preset(
            self.calibration_preset or DEFAULT_PRESET,
            top_k=top_k,
            mask_ratio=DEFAULT_MASK_RATIO if self.mask_ratio is None else self.mask_ratio,
            seed=seed,
            examples=self.calibration_examples,
            positions=self.calibration_positions,
            calibration_top_k=self.calibration_top_k,
            batch_size=self.calibration_batch_size,
            max_tokens=self.calibration_max_tokens,
        )


@dataclass
class Calibration:
    """tau and what produced it; saved as ``sedsft_calibration.json`` next to a run's outputs."""

    tau: float
    spec: CalibrationSpec | None  # None: tau was given, not calibrated
    num_positions: int = 0
    num_sequences: int = 0
    quantiles: dict[str, float] = field(default_factory=dict)  # a summary of the P_topk distribution
    source: dict = field(default_factory=dict)  # the data and model scored, records skipped, processes

    def save(self, path) -> None:
        atomic_write_json(path, asdict(self))

    @classmethod
    def load(cls, path) -> Calibration:
        data = read_json(path)
        if not isinstance(data, dict) or "spec" not in data:
            raise UserError(
                f"{path} is not a calibration record of this sedsft version; delete it or pass --tau"
            )
        spec = data["spec"] and CalibrationSpec(**data["spec"])
        return cls(**{**data, "spec": spec})


class LazyTokenized(Sequence):
    """Records tokenized on access exactly as ``sedsft sft`` tokenizes them; ``None`` where SFT drops one."""

    def __init__(
        self,
        records: Sequence[dict],
        tokenizer,
        *,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        max_length: int | None = None,
        overflow: str = "truncate",
        limit_reason: str = "--max_length",
    ):
        self.records, self.tokenizer = records, tokenizer
        self.system_prompt, self.max_length, self.overflow = system_prompt, max_length, overflow
        self.limit_reason = limit_reason  # where max_length comes from, for overflow="error"

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict | None:
        from .data import to_conversation, tokenize_conversation

        record = self.records[i]
        conv = to_conversation(record, system_prompt=self.system_prompt)
        return tokenize_conversation(
            self.tokenizer,
            conv,
            max_length=self.max_length,
            overflow=self.overflow,
            source=record.get("_source", f"record {i}"),
            reason=self.limit_reason,
        )


def pad_id(tokenizer) -> int:
    """The tokenizer's pad id, else its eos id (padded positions are never scored)."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


def sample_indices(
    total: int, *, examples: int | None, seed: int = DEFAULT_SEED, rule: str = "random"
) -> list[int]:
    """The one sampling rule, in increasing order: ``examples`` of ``total`` records (all if None or more).

    ``rule="random"``: a seeded random sample; ``"first"``: the first ones in file order.
    """
    check_count("num_examples", examples, allow_none=True)
    n = total if examples is None else min(examples, total)
    if rule == "first" or n == total:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(total), n))


def check_mask_ratio(r, *, name: str = "mask_ratio") -> float:
    """r as a number in [0, 1] (NaN refused), else a one-line error naming ``name``."""
    return float(check_number(name, r, low=0, high=1))


def check_tau(tau, *, name: str = "tau") -> float:
    """tau as a finite number >= 0 (P_topk lies in [0, 1]), else a one-line error naming ``name``."""
    return float(check_number(name, tau, low=0))


def exact_quantile(values: Tensor, q: float) -> float:
    """numpy's default (linear) quantile of a 1-D tensor, exactly, in O(N) via two selections."""
    n = values.numel()
    if n == 0:
        raise UserError(
            "no calibration positions: the data sample has no label tokens (check the data and labels)"
        )
    pos = q * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    v = values.double()
    v_lo = torch.kthvalue(v, lo + 1).values.item()
    v_hi = torch.kthvalue(v, hi + 1).values.item() if hi != lo else v_lo
    return v_lo + (pos - lo) * (v_hi - v_lo)


def order_statistic(values: Tensor, mask_ratio: float) -> float:
    """The released code's tau: ``sorted(values)[-int(r * n)]`` (Python's index -0 is the smallest value)."""
    n = values.numel()
    if n == 0:
        raise UserError(
            "no calibration positions: the data sample has no positions to score (check the data)"
        )
    m = int(mask_ratio * n)
    return torch.kthvalue(values.double(), (n - m if m else 0) + 1).values.item()


def pick_tau(values: Tensor, spec: CalibrationSpec) -> float:
    """tau from every scored position's P_topk, by the spec's statistic."""
    if spec.statistic == "order":
        return order_statistic(values, spec.mask_ratio)
    return exact_quantile(values, 1.0 - spec.mask_ratio)


def calibration_values(scored: ScoredPositions, spec: CalibrationSpec) -> Tensor:
    """``[N]`` P_topk of one scored batch as the spec computes it (fp32)."""
    k = min(spec.top_k, scored.stats.max_k)  # k beyond the vocabulary: all of the mass
    if not spec.round_to_logits:
        return scored.stats.topk_mass(k)
    # softmax in the logits' dtype, then torch.sum of the k largest in that dtype (exact for fp32 logits)
    probs = scored.stats.top_logp[:, :k].exp().to(scored.logits_dtype)  # [N, k]
    return probs.float().sum(-1).to(scored.logits_dtype).float()


def calibrate(
    model,
    examples: Sequence[dict | None],
    spec: CalibrationSpec,
    *,
    pad_token_id: int,
    accelerator=None,
    impl: str = "auto",
    source: dict | None = None,
) -> Calibration:
    """Score the spec's sample of ``examples`` with ``model`` and return tau with its record.

    ``examples[i]`` is a tokenized row (``input_ids``, ``labels``) or ``None`` for a record SFT drops
    (skipped and counted). With an ``accelerator`` of several processes, the sample's batches are dealt
    out whole (process p scores batches p, p + P, ...; each batch is the same on any number of
    processes), every process runs the same number of forward passes (collectives inside ZeRO-3/FSDP
    forwards stay matched), the values are gathered in sample order and every process gets the same tau.
    ``impl`` is the engine's implementation (:func:`sedsft.losses.token_stats`).
    """
    from .data import SFTCollator

    idx = sample_indices(len(examples), examples=spec.examples, seed=spec.seed, rule=spec.sample)
    chosen = [(i, examples[i]) for i in idx]
    kept = [(i, row) for i, row in chosen if row is not None]
    if not kept:
        raise UserError(
            f"no calibration examples: the {len(chosen)} sampled records leave no label token after "
            "tokenization (check the data, or raise --max_length)"
        )
    batches = [kept[s : s + spec.batch_size] for s in range(0, len(kept), spec.batch_size)]
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    collate = SFTCollator(pad_token_id)
    scored: list[tuple[int, Tensor]] = []
    with eval_mode(model):
        for b in range(rank, math.ceil(len(batches) / world) * world, world):
            part = batches[b] if b < len(batches) else batches[0]  # a spare forward keeps processes in step
            batch = collate([row for _, row in part])
            out = score_batch(model, batch, top_k=spec.top_k, positions=spec.positions, impl=impl)
            if b < len(batches):
                pieces = out.per_row(calibration_values(out, spec).cpu(), len(part))
                scored += [(i, v) for (i, _), v in zip(part, pieces, strict=True)]
    if world > 1:
        from accelerate.utils import gather_object

        scored = gather_object(scored)
    scored.sort(key=lambda t: t[0])
    values = torch.cat([v for _, v in scored])  # [N] in sample order
    if spec.max_tokens is not None:
        values = values[: spec.max_tokens]
    tau = pick_tau(values, spec)
    if world > 1:
        from accelerate.utils import broadcast_object_list

        tau = broadcast_object_list([tau], from_process=0)[0]  # already equal everywhere; made certain
    return Calibration(
        tau=tau,
        spec=spec,
        num_positions=int(values.numel()),
        num_sequences=len(kept),
        quantiles={f"q{int(q * 100):02d}": exact_quantile(values, q) for q in _SUMMARY},
        source={
            **(source or {}),
            "records_sampled": len(chosen),
            "records_skipped": len(chosen) - len(kept),
            "processes": world,
        },
    )


def calibrate_records(
    model,
    tokenizer,
    records: Sequence[dict],
    spec: CalibrationSpec,
    *,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    max_length: int | None = None,
    overflow: str = "truncate",
    limit_reason: str = "--max_length",
    source: dict | None = None,
) -> Calibration:
    """:func:`calibrate` on raw records (a data file's rows), tokenized as ``sedsft sft`` tokenizes them."""
    examples = LazyTokenized(
        records,
        tokenizer,
        system_prompt=system_prompt,
        max_length=max_length,
        overflow=overflow,
        limit_reason=limit_reason,
    )
    return calibrate(model, examples, spec, pad_token_id=pad_id(tokenizer), source=source)
