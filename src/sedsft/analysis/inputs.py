"""What the analysis tools read: records -> tokenized records and padded batches, a model from disk.

Records are tokenized by the SFT pipeline's own rule (:class:`sedsft.calibrate.LazyTokenized`), so an
analysis sees exactly the tokens (chat template, system prompt, truncation, label mask) that training
sees, and a sample of records is drawn by calibration's one rule (:func:`sedsft.calibrate.sample_indices`).
Batches follow the HF unshifted convention: ``labels`` is -100 on prompt and padding tokens, and position
t predicts ``labels[t + 1]``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sedsft.calibrate import LazyTokenized
from sedsft.errors import UserError, check_count
from sedsft.models import load_local_model
from sedsft.prompts import DEFAULT_SYSTEM_PROMPT

MAX_LENGTH = 1024  # sedsft sft's default --max_length (TRL's SFTConfig): analyses see what training sees


@dataclass
class TokenizedRecord:
    """One record as SFT tokenizes it; ``index`` is its position in the records it came from."""

    index: int
    input_ids: list[int]
    labels: list[int]

    def row(self) -> dict:
        """The row format of a tokenized dataset (what ``sedsft.data.SFTCollator`` pads)."""
        return {"input_ids": self.input_ids, "labels": self.labels}


def tokenize_records(
    tokenizer,
    records: Sequence[dict],
    *,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    max_length: int | None = MAX_LENGTH,
    overflow: str = "truncate",
    limit_reason: str = "--max_length",
    indices: Sequence[int] | None = None,
) -> list[TokenizedRecord]:
    """``records`` (or the ``indices`` of them) as SFT tokenizes them; records SFT drops are skipped.

    ``max_length`` is the token limit (``limit_reason``: where it comes from), ``overflow`` as sft's."""
    view = LazyTokenized(
        records,
        tokenizer,
        system_prompt=system_prompt,
        max_length=max_length,
        overflow=overflow,
        limit_reason=limit_reason,
    )
    out = []
    for i in range(len(records)) if indices is None else indices:
        row = view[i]
        if row is not None:
            out.append(
                TokenizedRecord(int(i), [int(x) for x in row["input_ids"]], [int(x) for x in row["labels"]])
            )
    return out


def batches_of(examples: Sequence[TokenizedRecord], *, batch_size: int, pad_token_id: int) -> Iterator[dict]:
    """Padded batches of ``batch_size`` examples in order (the last one may be smaller)."""
    from sedsft.data import SFTCollator

    check_count("batch_size", batch_size)
    collator = SFTCollator(pad_token_id)
    for start in range(0, len(examples), batch_size):
        yield collator([e.row() for e in examples[start : start + batch_size]])


def read_records(path: str | os.PathLike) -> list[dict]:
    """All records of a data file or folder (any layout ``sedsft.data`` reads), or a clear error."""
    from sedsft.data import load_records

    if not Path(path).exists():
        raise UserError(
            f"data file not found: {path} (pass --data with an existing JSONL/JSON/Parquet file or folder)"
        )
    records = load_records(path)
    if not records:
        raise UserError(f"{path} holds no records; pass a data file with at least one example")
    return records


def load_model_and_tokenizer(
    path: str, *, tokenizer_path: str | None = None, device: str = "auto", dtype: str = "auto"
):
    """A causal LM and its tokenizer from local folders, in eval mode (see :mod:`sedsft.models`)."""
    return load_local_model(
        path, tokenizer_path=tokenizer_path, dtype=dtype, device=None if device == "auto" else device
    )
