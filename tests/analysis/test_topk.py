"""Cumulative top-k probability against an fp64 full softmax of each record scored alone; tau against
numpy's quantile of those values; the written report; oversized requests refused in one line."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from sedsft.analysis.inputs import batches_of, tokenize_records
from sedsft.analysis.topk import analyze_topk, topk_distribution
from sedsft.calibrate import pad_id
from sedsft.errors import UserError
from sedsft.scoring import MAX_TOP_K

from .helpers import check_png


def _batches(model, tokenizer, records, batch_size=4):
    examples = tokenize_records(tokenizer, records)
    return list(batches_of(examples, batch_size=batch_size, pad_token_id=pad_id(tokenizer)))


def _naive(model, tokenizer, records, max_k):
    """Each record alone (no padding), its logits softmaxed in fp64, sorted, cumulated: the reference."""
    out = []
    with torch.no_grad():
        for e in tokenize_records(tokenizer, records):
            probs = model(input_ids=torch.tensor([e.input_ids])).logits[0].double().softmax(-1)  # [T, V]
            keep = [t for t in range(len(e.labels) - 1) if e.labels[t + 1] != -100]
            out.append(probs[keep].sort(-1, descending=True).values.cumsum(-1)[:, :max_k])  # [n, max_k]
    return torch.cat(out).numpy()


@pytest.mark.parametrize("chunk_size", [7, None])  # 7: many chunks with a ragged last one
def test_values_quantiles_and_tau_match_full_softmax(model, tokenizer, records, chunk_size):
    batches = _batches(model, tokenizer, records, batch_size=4)  # 6 records: batches of 4 and 2, padded
    dist = topk_distribution(model, batches, max_k=10, chunk_size=chunk_size)
    ref = _naive(model, tokenizer, records, 10)
    assert dist.values.shape == ref.shape
    np.testing.assert_allclose(dist.values.double().numpy(), ref, atol=2e-6)
    for k, qs in dist.quantiles((0.0, 0.1, 0.3, 0.5, 0.9, 1.0)).items():
        for q, v in qs.items():
            assert v == pytest.approx(np.quantile(ref[:, k - 1], q), abs=2e-6)
    for k in (1, 2, 10):
        for r in (0.0, 0.7, 1.0):
            expected = np.quantile(ref[:, k - 1], 1 - r)
            assert dist.tau(top_k=k, mask_ratio=r) == pytest.approx(expected, abs=2e-6)
    assert np.all(np.diff(ref, axis=1) >= -1e-6)  # cumulative: non-decreasing in k


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
    ref = _naive(model, tokenizer, [records[i] for i in report.example_indices], 4)
    for row in rows:
        expected = np.quantile(ref[:, int(row["k"]) - 1], 1 - float(row["mask_ratio"]))
        assert float(row["tau"]) == pytest.approx(expected, abs=2e-6)
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


def test_oversized_requests_are_refused_at_once(model, tokenizer, records):
    with pytest.raises(UserError, match=rf"max_k must be an integer in \[1, {MAX_TOP_K}\], got 100000"):
        analyze_topk(model, tokenizer, records, max_k=100_000)
    long = [{"question": "Add these.", "response": "1+" * 100_000 + "1"}]  # 200,001 characters
    with pytest.raises(UserError, match=r"longer than the model's context \(256 positions.*--max_length 256"):
        analyze_topk(model, tokenizer, long, max_k=3, max_length=None)
    with pytest.raises(UserError, match=r"--max_length 256"):
        analyze_topk(model, tokenizer, long, max_k=3)  # sft's default max_length (1024) still exceeds 256
    report = analyze_topk(model, tokenizer, long, max_k=3, max_length=200)
    assert report.distribution.num_positions == 200 - 1 - report.distribution.position.min().item()
