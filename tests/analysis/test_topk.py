"""Cumulative top-k probability: against a full-softmax twin, tau against calibrate_tau, the written report."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from sedsft.analysis.inputs import batches_of, pad_id, tokenize_records
from sedsft.analysis.topk import analyze_topk, topk_distribution
from sedsft.calibrate import calibrate_tau
from sedsft.errors import UserError

from .helpers import check_png


def _batches(model, tokenizer, records, batch_size=4):
    examples = tokenize_records(tokenizer, records)
    return list(batches_of(examples, batch_size=batch_size, pad_token_id=pad_id(tokenizer)))


def _naive(model, batches, max_k):
    """Full softmax over [B, T, V] logits, sorted, cumulated: the reference."""
    out = []
    with torch.no_grad():
        for b in batches:
            probs = (
                model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float().softmax(-1)
            )
            sel = torch.zeros_like(b["input_ids"], dtype=torch.bool)
            sel[:, :-1] = b["labels"][:, 1:] != -100
            cum = probs[sel].sort(-1, descending=True).values.cumsum(-1)[:, :max_k]  # [N, max_k]
            out.append(cum)
    return torch.cat(out).double().numpy()


@pytest.mark.parametrize("chunk_size", [7, 256])  # 7: many chunks with a ragged last one
def test_values_and_quantiles_match_full_softmax(model, tokenizer, records, chunk_size):
    batches = _batches(model, tokenizer, records, batch_size=4)  # 6 records: batches of 4 and 2, padded
    dist = topk_distribution(model, batches, max_k=10, chunk_size=chunk_size)
    ref = _naive(model, batches, 10)
    assert dist.values.shape == ref.shape
    np.testing.assert_allclose(dist.values.double().numpy(), ref, atol=2e-6)
    for k, qs in dist.quantiles((0.0, 0.1, 0.3, 0.5, 0.9, 1.0)).items():
        for q, v in qs.items():
            assert v == pytest.approx(np.quantile(ref[:, k - 1], q), abs=2e-6)
    assert np.all(np.diff(ref, axis=1) >= -1e-6)  # cumulative: non-decreasing in k


def test_tau_equals_calibrate_tau_exactly(model, tokenizer, records):
    batches = _batches(model, tokenizer, records, batch_size=3)
    dist = topk_distribution(model, batches, max_k=10)
    for k in (1, 2, 3, 10):
        for r in (0.0, 0.5, 0.7, 0.9, 1.0):
            assert dist.tau(top_k=k, mask_ratio=r) == calibrate_tau(model, batches, top_k=k, mask_ratio=r)


def test_positions_and_gold_tokens_are_recorded(model, tokenizer, records):
    batches = _batches(model, tokenizer, records, batch_size=2)
    dist = topk_distribution(model, batches, max_k=3)
    n_labels = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
    assert dist.num_positions == n_labels and dist.num_sequences == len(records)
    first = batches[0]
    t = int(dist.position[0])
    assert int(dist.token_id[0]) == int(first["labels"][0, t + 1]) != -100
    capped = topk_distribution(model, batches, max_k=3, max_tokens=25)
    assert capped.num_positions == 25
    torch.testing.assert_close(capped.values, dist.values[:25])


def test_no_label_tokens_is_a_clear_error(model):
    batch = {
        "input_ids": torch.ones(2, 5, dtype=torch.long),
        "attention_mask": torch.ones(2, 5, dtype=torch.long),
        "labels": torch.full((2, 5), -100),
    }
    with pytest.raises(UserError, match="no label tokens"):
        topk_distribution(model, [batch], max_k=2)


def test_report_files_and_tau_table(model, tokenizer, records, tmp_path):
    report = analyze_topk(
        model,
        tokenizer,
        records,
        max_k=4,
        num_examples=5,
        seed=1,
        batch_size=2,
        mask_ratios=(0.5, 0.7),
        output_dir=tmp_path,
    )
    assert len(report.example_indices) == 5 and report.example_indices == sorted(report.example_indices)
    check_png(tmp_path / "topk.png")
    with open(tmp_path / "topk_tau.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 2
    chosen = [records[i] for i in report.example_indices]
    batches = _batches(model, tokenizer, chosen, batch_size=2)
    for row in rows:
        expected = calibrate_tau(model, batches, top_k=int(row["k"]), mask_ratio=float(row["mask_ratio"]))
        assert float(row["tau"]) == expected
    with open(tmp_path / "topk_histogram.csv") as f:
        hist = list(csv.DictReader(f))
    for k in range(1, 5):
        counts = [int(h["count"]) for h in hist if int(h["k"]) == k]
        assert sum(counts) == report.distribution.num_positions
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "topk_positions.parquet")
    assert table.num_rows == report.distribution.num_positions
    assert set(table.column("example_index").to_pylist()) == set(report.example_indices)
    assert (tmp_path / "topk_summary.json").exists() and (tmp_path / "topk_summary.csv").exists()
