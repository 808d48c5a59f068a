"""How concentrated the next-token distribution is: cumulative top-k probability for k = 1..max_k.

For every position that predicts a label token, P_topk(t) is the total probability of the k most
probable next tokens (the paper's Figure 3, "token exploration space"). SED-SFT penalises a position
only when P_topk < tau, with tau the (1 - r)-quantile of P_topk; :meth:`TopkDistribution.tau` gives
that tau for any (k, r). The numbers come from :func:`sedsft.scoring.score_batch`, the routine
calibration uses, and the records are sampled by calibration's rule, so ``analyze_topk(...).tau(top_k=k,
mask_ratio=r)`` is the tau ``sedsft calibrate`` finds for the same records, seed, batch size and k.

Memory: values are kept exactly, as one fp32 ``[N, max_k]`` array (4 * max_k bytes per position:
40 MB per million positions at max_k = 10), plus three int32 ids per position; the ``[tokens, vocab]``
logits are never held (the LM head is streamed in chunks of positions). Memory therefore grows with the
number of scored positions, not with vocabulary or sequence length; cap it with ``max_tokens``.
``max_k`` is at most :data:`sedsft.scoring.MAX_TOP_K`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sedsft.calibrate import (
    DEFAULT_SEED,
    CalibrationSpec,
    check_mask_ratio,
    exact_quantile,
    pad_id,
    pick_tau,
    sample_indices,
)
from sedsft.errors import UserError
from sedsft.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from sedsft.prompts import DEFAULT_SYSTEM_PROMPT
from sedsft.scoring import check_length, check_top_k, eval_mode, score_batch

from .inputs import MAX_LENGTH, batches_of, tokenize_records
from .plots import new_figure, save_png

DEFAULT_MASK_RATIOS = (0.5, 0.6, 0.7, 0.8, 0.9)
SUMMARY_QUANTILES = (0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0)
HISTOGRAM_BINS = 50
MAX_POSITIONS_FILE = 1_000_000  # per-position values are written only up to this many positions


@dataclass
class TopkDistribution:
    """P_topk for k = 1..max_k at every scored position, in batch order."""

    values: Tensor  # [N, max_k] fp32; values[n, k - 1] = P_topk at position n
    sequence: Tensor  # [N] int32: running index of the sequence (0.. in batch order)
    position: Tensor  # [N] int32: index t of the position, which predicts token t + 1
    token_id: Tensor  # [N] int32: the gold (label) token that position t predicts
    num_sequences: int

    @property
    def max_k(self) -> int:
        return int(self.values.shape[1])

    @property
    def num_positions(self) -> int:
        return int(self.values.shape[0])

    def column(self, k: int) -> Tensor:
        if not 1 <= k <= self.max_k:
            raise ValueError(
                f"k must be in 1..{self.max_k} (the max_k this distribution was computed with), got {k}"
            )
        return self.values[:, k - 1].contiguous()  # [N]

    def tau(self, *, top_k: int, mask_ratio: float) -> float:
        """The tau SED-SFT calibrates for (top_k, mask_ratio) on these positions (the paper preset's rule)."""
        return pick_tau(self.column(top_k), CalibrationSpec(top_k=top_k, mask_ratio=mask_ratio))

    def quantiles(self, qs: Sequence[float] = SUMMARY_QUANTILES) -> dict[int, dict[float, float]]:
        """{k: {q: the q-quantile of P_topk}} (numpy's linear definition, exact)."""
        return {k: {q: exact_quantile(self.column(k), q) for q in qs} for k in range(1, self.max_k + 1)}


def topk_distribution(
    model,
    batches: Iterable[dict],
    *,
    max_k: int = 10,
    positions: str = "labels",
    max_tokens: int | None = None,
    chunk_size: int | None = None,
) -> TopkDistribution:
    """Stream ``batches`` (dicts with input_ids, attention_mask, labels) through ``model``; keep P_topk per position."""
    max_k = check_top_k(max_k, name="max_k")
    vals, seqs, poss, toks = [], [], [], []
    n_seq = n_pos = 0
    with eval_mode(model):
        for batch in batches:
            check_length(model, batch["input_ids"].shape[1])
            scored = score_batch(model, batch, top_k=max_k, positions=positions, chunk_size=chunk_size)
            v = scored.stats.cumulative()  # [n, k'], k' = min(max_k, vocabulary)
            if v.shape[1] < max_k:  # k beyond the vocabulary: all the mass is already in
                v = torch.cat([v, v[:, -1:].expand(-1, max_k - v.shape[1])], dim=1)  # [n, max_k]
            row, pos, tok = scored.row, scored.position, scored.target
            if max_tokens is not None and n_pos + v.shape[0] > max_tokens:
                keep = max_tokens - n_pos
                v, row, pos, tok = v[:keep], row[:keep], pos[:keep], tok[:keep]
            vals.append(v.cpu())
            seqs.append((row + n_seq).int().cpu())
            poss.append(pos.int().cpu())
            toks.append(tok.int().cpu())
            n_pos += v.shape[0]
            n_seq += batch["input_ids"].shape[0]
            if max_tokens is not None and n_pos >= max_tokens:
                break
    if n_pos == 0:
        raise UserError(
            "no positions to score: the data sample has no label tokens (check the data and its labels)"
        )
    return TopkDistribution(
        values=torch.cat(vals),
        sequence=torch.cat(seqs),
        position=torch.cat(poss),
        token_id=torch.cat(toks),
        num_sequences=n_seq,
    )


# ----------------------------------------------------------------------------- tables


def summary_rows(dist: TopkDistribution, qs: Sequence[float] = SUMMARY_QUANTILES) -> list[dict]:
    """One row per k: count, mean, std and the quantiles of P_topk."""
    rows = []
    for k, qv in dist.quantiles(qs).items():
        col = dist.column(k).double()
        row = {
            "k": k,
            "count": dist.num_positions,
            "mean": col.mean().item(),
            "std": col.std(unbiased=False).item(),
        }
        row.update({f"q{q * 100:g}": v for q, v in qv.items()})
        rows.append(row)
    return rows


def tau_rows(dist: TopkDistribution, mask_ratios: Sequence[float] = DEFAULT_MASK_RATIOS) -> list[dict]:
    """Long format: the tau that each (k, r) calibrates to on this data."""
    return [
        {"k": k, "mask_ratio": float(r), "tau": dist.tau(top_k=k, mask_ratio=r)}
        for k in range(1, dist.max_k + 1)
        for r in mask_ratios
    ]


def histogram_rows(dist: TopkDistribution, *, bins: int = HISTOGRAM_BINS) -> list[dict]:
    """Long format: per k and bin of [0, 1], the count, density (per unit probability) and ECDF at the bin's top."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for k in range(1, dist.max_k + 1):
        col = np.clip(dist.column(k).numpy(), 0.0, 1.0)  # fp32 sums can exceed 1 by an ulp
        counts, _ = np.histogram(col, bins=edges)
        cum = np.cumsum(counts)
        for i, c in enumerate(counts):
            rows.append(
                {
                    "k": k,
                    "bin_lo": float(edges[i]),
                    "bin_hi": float(edges[i + 1]),
                    "count": int(c),
                    "density": float(c / (len(col) * (edges[i + 1] - edges[i]))),
                    "ecdf": float(cum[i] / len(col)),
                }
            )
    return rows


def to_csv(rows: Sequence[dict]) -> str:
    """Rows with the same keys as CSV text (floats with full precision)."""
    if not rows:
        return ""
    keys = list(rows[0])
    lines = [",".join(keys)]
    for r in rows:
        lines.append(",".join(repr(r[k]) if isinstance(r[k], float) else str(r[k]) for k in keys))
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- figure


def plot_topk(
    dist: TopkDistribution,
    path: str | os.PathLike,
    *,
    histogram: Sequence[dict] | None = None,
    tau_mask_ratio: float | None = 0.7,
    title: str | None = None,
) -> Path:
    """Figure 3: per k, the distribution of P_topk as a violin drawn from the histogram, with quartiles.

    The violins are the mirrored histogram densities (exact, bounded to [0, 1], the numbers of the
    histogram CSV), not a kernel density estimate.
    """
    histogram = histogram if histogram is not None else histogram_rows(dist)
    quant = dist.quantiles((0.25, 0.5, 0.75))
    fig = new_figure(max(6.0, 0.6 * dist.max_k + 2.5), 4.6)
    ax = fig.add_subplot()
    for k in range(1, dist.max_k + 1):
        rows = [r for r in histogram if r["k"] == k]
        dens = np.array([r["density"] for r in rows])
        scale = 0.42 / dens.max() if dens.max() > 0 else 0.0
        ys = np.array([[r["bin_lo"], r["bin_hi"]] for r in rows]).ravel()
        half = np.repeat(dens * scale, 2)  # step outline: constant width inside each bin
        ax.fill_betweenx(ys, k - half, k + half, color="#4C72B0", alpha=0.55, linewidth=0)
        q = quant[k]
        ax.vlines(
            k, q[0.25], q[0.75], color="black", linewidth=3, label="interquartile range" if k == 1 else None
        )
        ax.plot(
            k,
            q[0.5],
            "o",
            color="white",
            markeredgecolor="black",
            markersize=5,
            label="median" if k == 1 else None,
        )
        if tau_mask_ratio is not None:
            tau = dist.tau(top_k=k, mask_ratio=tau_mask_ratio)
            ax.hlines(
                tau,
                k - 0.4,
                k + 0.4,
                color="#C44E52",
                linewidth=1.5,
                label=f"tau for r = {tau_mask_ratio:g}" if k == 1 else None,
            )
    ax.set_xticks(range(1, dist.max_k + 1))
    ax.set_xlim(0.4, dist.max_k + 0.6)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("k (number of most probable next tokens)")
    ax.set_ylabel("cumulative top-k probability P_topk (probability, 0-1)")
    ax.set_title(
        title
        or f"Token exploration space: P_topk at {dist.num_positions:,} label positions of {dist.num_sequences:,} sequences",
        fontsize=10,
    )
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return save_png(fig, path)


# ----------------------------------------------------------------------------- end to end


@dataclass
class TopkReport:
    """What :func:`analyze_topk` computed and, when given an output folder, the files it wrote."""

    distribution: TopkDistribution
    summary: list[dict]  # one row per k (see :func:`summary_rows`)
    taus: list[dict]  # {"k", "mask_ratio", "tau"} rows
    histogram: list[dict]  # {"k", "bin_lo", "bin_hi", "count", "density", "ecdf"} rows
    example_indices: list[int]  # record index of each scored sequence, in order
    files: dict[str, Path] = field(default_factory=dict)

    def tau(self, *, top_k: int, mask_ratio: float) -> float:
        return self.distribution.tau(top_k=top_k, mask_ratio=mask_ratio)


def analyze_topk(
    model,
    tokenizer,
    records: Sequence[dict],
    *,
    max_k: int = 10,
    mask_ratios: Sequence[float] = DEFAULT_MASK_RATIOS,
    num_examples: int | None = 100,
    seed: int = DEFAULT_SEED,
    batch_size: int = 8,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    max_length: int | None = MAX_LENGTH,
    overflow: str = "truncate",
    limit_reason: str = "--max_length",
    max_tokens: int | None = None,
    output_dir: str | os.PathLike | None = None,
    meta: dict | None = None,
) -> TopkReport:
    """Score a seeded sample of ``records`` (as SFT tokenizes and calibration samples them); write the report.

    Files written: ``topk_summary.csv`` (quantiles per k), ``topk_tau.csv`` (tau per (k, r)),
    ``topk_histogram.csv`` (histogram and ECDF per k), ``topk_positions.parquet`` (every position's
    values, up to a million positions), ``topk_summary.json`` (all of it plus ``meta``) and ``topk.png``.
    """
    max_k = check_top_k(max_k, name="max_k")
    for r in mask_ratios:
        check_mask_ratio(r, name="mask_ratios (each)")
    chosen = sample_indices(len(records), examples=num_examples, seed=seed)
    examples = tokenize_records(
        tokenizer,
        records,
        system_prompt=system_prompt,
        max_length=max_length,
        overflow=overflow,
        limit_reason=limit_reason,
        indices=chosen,
    )
    if not examples:
        raise UserError(
            "none of the sampled records has a response token left after tokenization; check the data"
        )
    batches = batches_of(examples, batch_size=batch_size, pad_token_id=pad_id(tokenizer))
    dist = topk_distribution(model, batches, max_k=max_k, max_tokens=max_tokens)
    report = TopkReport(
        distribution=dist,
        summary=summary_rows(dist),
        taus=tau_rows(dist, mask_ratios),
        histogram=histogram_rows(dist),
        example_indices=[e.index for e in examples[: dist.num_sequences]],
    )
    if output_dir is not None:
        report.files = write_topk_report(
            report, output_dir, meta={"seed": seed, "num_examples": num_examples, **(meta or {})}
        )
    return report


def write_topk_report(
    report: TopkReport, output_dir: str | os.PathLike, *, meta: dict | None = None
) -> dict[str, Path]:
    """Write the tables, the per-position values, a JSON summary and the figure into ``output_dir``."""
    out = Path(output_dir)
    dist = report.distribution
    files = {
        "summary_csv": atomic_write_text(out / "topk_summary.csv", to_csv(report.summary)),
        "tau_csv": atomic_write_text(out / "topk_tau.csv", to_csv(report.taus)),
        "histogram_csv": atomic_write_text(out / "topk_histogram.csv", to_csv(report.histogram)),
    }
    if dist.num_positions <= MAX_POSITIONS_FILE:
        files["positions_parquet"] = _write_positions(report, out / "topk_positions.parquet")
    files["figure"] = plot_topk(dist, out / "topk.png", histogram=report.histogram)
    summary = {
        "num_positions": dist.num_positions,
        "num_sequences": dist.num_sequences,
        "max_k": dist.max_k,
        "positions_file": "topk_positions.parquet"
        if "positions_parquet" in files
        else f"not written: more than {MAX_POSITIONS_FILE:,} positions",
        "meta": dict(meta or {}),
        "summary": report.summary,
        "tau": report.taus,
        "example_indices": report.example_indices,
    }
    files["summary_json"] = atomic_write_json(out / "topk_summary.json", summary)
    return files


def _write_positions(report: TopkReport, path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dist = report.distribution
    seq = dist.sequence.numpy()
    columns = {
        "sequence": seq,
        "example_index": np.asarray(report.example_indices, dtype=np.int64)[seq],
        "position": dist.position.numpy(),
        "token_id": dist.token_id.numpy(),
    }
    columns.update({f"top{k}": dist.column(k).numpy() for k in range(1, dist.max_k + 1)})
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return atomic_write_bytes(path, buf.getvalue())


__all__ = [
    "DEFAULT_MASK_RATIOS",
    "TopkDistribution",
    "TopkReport",
    "analyze_topk",
    "histogram_rows",
    "plot_topk",
    "summary_rows",
    "tau_rows",
    "topk_distribution",
    "write_topk_report",
]
