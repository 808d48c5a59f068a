"""What the analysis tools read: records -> padded token batches, a data sample, a model from disk.

Records go through the SFT pipeline's own functions (``sedsft.data``), so an analysis sees exactly the
tokens (chat template, system prompt, label mask) that training sees. Batches follow the HF unshifted
convention: ``labels`` is -100 on prompt and padding tokens, and position t predicts ``labels[t + 1]``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from sedsft.errors import UserError
from sedsft.models import load_local_model
from sedsft.prompts import DEFAULT_SYSTEM_PROMPT


@dataclass
class Example:
    """One tokenized record; ``index`` is its position in the records it came from."""

    index: int
    input_ids: list[int]
    labels: list[int]


def tokenize_records(
    tokenizer,
    records: Iterable[dict],
    *,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    max_length: int | None = None,
    indices: Sequence[int] | None = None,
) -> list[Example]:
    """Tokenize records as SFT does; records that tokenize to nothing (no label left) are skipped."""
    from sedsft.data import to_conversation, tokenize_conversation  # the SFT pipeline's own tokenization

    out = []
    for i, record in enumerate(records):
        conv = to_conversation(record, system_prompt=system_prompt)
        enc = tokenize_conversation(tokenizer, conv, max_length=max_length, overflow="truncate")
        if enc is None:
            continue
        labels = [int(x) for x in enc["labels"]]
        if all(x == -100 for x in labels[1:]):  # label 0 is never predicted
            continue
        out.append(
            Example(
                index=i if indices is None else int(indices[i]),
                input_ids=[int(x) for x in enc["input_ids"]],
                labels=labels,
            )
        )
    return out


def collate(examples: Sequence[Example], *, pad_token_id: int) -> dict:
    """Right-padded batch: ``input_ids`` / ``attention_mask`` / ``labels`` as ``[B, T]`` long tensors."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)  # [B, T]
    mask = torch.zeros((len(examples), width), dtype=torch.long)  # [B, T]
    labels = torch.full((len(examples), width), -100, dtype=torch.long)  # [B, T]
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(e.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def batches_of(examples: Sequence[Example], *, batch_size: int, pad_token_id: int) -> Iterator[dict]:
    """Batches of ``batch_size`` examples in order (the last one may be smaller)."""
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(examples), batch_size):
        yield collate(examples[start : start + batch_size], pad_token_id=pad_token_id)


def pad_id(tokenizer) -> int:
    """The tokenizer's pad id, or its eos id when it has none (padded positions are never scored)."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


def sample_indices(total: int, *, num_examples: int | None, seed: int) -> list[int]:
    """Sorted indices of a seeded random sample of ``num_examples`` out of ``total`` (all if None or more)."""
    if num_examples is not None and num_examples < 1:
        raise UserError(f"num_examples must be >= 1, got {num_examples}")
    if num_examples is None or num_examples >= total:
        return list(range(total))
    return sorted(random.Random(seed).sample(range(total), num_examples))


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
