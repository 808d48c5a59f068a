"""Scoring and tau calibration against references computed differently: a full fp64 softmax of each
sequence scored alone, numpy's quantile, and a transcription of the authors' released calibration rule."""

import copy
import math
import random

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sedsft.calibrate import (
    Calibration,
    CalibrationSpec,
    calibrate,
    exact_quantile,
    order_statistic,
    sample_indices,
)
from sedsft.data import SFTCollator
from sedsft.errors import UserError
from sedsft.scoring import MAX_TOP_K, check_length, context_length, score_batch

V = 67
PAD = 0


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, initializer_range=0.3, max_position_embeddings=64,
    )  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


def make_rows(n=20, seed=1, lo=6, hi=30):
    """Tokenized rows of varied length: a prompt (labels -100) then a response."""
    g = random.Random(seed)
    rows = []
    for _ in range(n):
        length = g.randint(lo, hi)
        ids = [g.randrange(1, V) for _ in range(length)]
        prompt = g.randint(1, length - 2)
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return rows


def reference(model, rows, positions):
    """Per selected position, in row-major order: fp64 sorted probabilities, entropy, gold prob; each row alone."""
    sorted_p, entropy, gold = [], [], []
    with torch.no_grad():
        for r in rows:
            z = model(input_ids=torch.tensor([r["input_ids"]])).logits[0].double()  # [T, V]
            p = z.softmax(-1)
            nxt = r["labels"][1:] + [-100]
            keep = [t for t in range(len(nxt)) if positions == "all" or nxt[t] != -100]
            sorted_p.append(p[keep].sort(-1, descending=True).values)
            entropy.append(-(p[keep] * p[keep].log()).sum(-1))
            gold.append(torch.tensor([p[t, nxt[t]].item() if nxt[t] != -100 else math.nan for t in keep]))
    return torch.cat(sorted_p).numpy(), torch.cat(entropy).numpy(), torch.cat(gold).numpy()


def spec(**kw):
    base = dict(top_k=2, mask_ratio=0.7, examples=10_000, batch_size=4)
    return CalibrationSpec(**{**base, **kw})


@pytest.mark.parametrize("positions", ["labels", "all"])
@pytest.mark.parametrize("chunk_size", [5, None])  # 5: many chunks, a ragged last one
def test_score_batch_matches_full_softmax(model, positions, chunk_size):
    rows = make_rows(6)
    batch = SFTCollator(PAD)(rows)  # padded to the longest row
    out = score_batch(model, batch, top_k=4, positions=positions, chunk_size=chunk_size)
    ref_p, ref_h, ref_gold = reference(model, rows, positions)
    assert out.stats.num_positions == len(ref_p)
    np.testing.assert_allclose(out.stats.cumulative().double().numpy(), ref_p[:, :4].cumsum(-1), atol=2e-6)
    np.testing.assert_allclose(out.stats.entropy.double().numpy(), ref_h, atol=2e-5)
    if positions == "labels":
        np.testing.assert_allclose(out.stats.prob.double().numpy(), ref_gold, atol=2e-6)
        assert (out.target == batch["labels"][out.row, out.position + 1]).all()
    else:
        assert out.stats.logp is None
    labelled = [sum(x != -100 for x in r["labels"][1:]) for r in rows]
    counts = labelled if positions == "labels" else [len(r["input_ids"]) for r in rows]
    assert torch.bincount(out.row, minlength=len(rows)).tolist() == counts


def test_the_engine_path_projects_one_position_and_the_fallback_agrees(model):
    rows = make_rows(3)
    batch = SFTCollator(PAD)(rows)
    seen = []
    hook = model.lm_head.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    try:
        fused = score_batch(model, batch, top_k=3)
        assert seen == [(3, 1, V)]  # logits_to_keep=1: no [B, T, V] logits
        other = copy.deepcopy(model)
        other.config.final_logit_softcapping = 30.0  # a head the engine refuses (Llama ignores the value)
        logits_path = score_batch(other, batch, top_k=3)
    finally:
        hook.remove()
    torch.testing.assert_close(logits_path.stats.top_logp, fused.stats.top_logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits_path.stats.logp, fused.stats.logp, atol=1e-5, rtol=0)


def test_sizes_are_bounded(model):
    assert context_length(model) == 64
    yarn = LlamaConfig(
        max_position_embeddings=32768,
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
    )
    holder = torch.nn.Module()
    holder.config = yarn
    assert context_length(holder) == 4 * 32768  # RoPE scaling extends the context
    with pytest.raises(UserError, match=r"longer than the model's context \(64 positions.*--max_length 64"):
        check_length(model, 65)
    with pytest.raises(UserError, match=rf"top_k must be an integer in \[1, {MAX_TOP_K}\]"):
        score_batch(model, SFTCollator(PAD)(make_rows(1)), top_k=MAX_TOP_K + 1)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("r", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("positions", ["labels", "all"])
def test_tau_is_the_exact_quantile(model, k, r, positions):
    rows = make_rows()
    cal = calibrate(model, rows, spec(top_k=k, mask_ratio=r, positions=positions), pad_token_id=PAD)
    ref = reference(model, rows, positions)[0][:, :k].sum(-1)
    assert cal.num_positions == len(ref) and cal.num_sequences == len(rows)
    assert cal.tau == pytest.approx(float(np.quantile(ref, 1 - r)), abs=2e-6)


@pytest.mark.parametrize("r", [0.1, 0.5, 0.7, 0.9])
def test_penalised_share_is_one_minus_r(model, r):
    rows = make_rows(30)
    cal = calibrate(model, rows, spec(mask_ratio=r), pad_token_id=PAD)
    ref = reference(model, rows, "labels")[0][:, :2].sum(-1)
    penalised = int((ref < cal.tau).sum())  # M_t = 1[P_topk < tau]
    assert abs(penalised - (1 - r) * cal.num_positions) <= 1


def test_batching_does_not_change_the_values(model):
    rows = make_rows()
    taus = {bs: calibrate(model, rows, spec(batch_size=bs), pad_token_id=PAD).tau for bs in (1, 3, 50)}
    assert max(taus.values()) - min(taus.values()) < 1e-6


def authors_values(model, rows, *, k, n=100):
    """The released code's scoring, transcribed: each of the first n sequences alone, its logits softmaxed in
    the model's dtype, the k largest probabilities summed at every position."""
    values = []
    with torch.no_grad():
        for row in rows[:n]:
            probs = torch.softmax(model(torch.tensor([row["input_ids"]])).logits[0], dim=-1)  # [T, V]
            values.extend(probs.topk(k, dim=-1).values.sum(-1).tolist())
    return np.sort(np.asarray(values))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_authors_preset_reproduces_the_released_rule(model, dtype):
    rows = make_rows(104, seed=3, lo=4, hi=20)  # more than 100: only the first 100 count
    m = copy.deepcopy(model).to(dtype)
    ordered = authors_values(m, rows, k=10)
    assert len(ordered) == sum(len(x["input_ids"]) for x in rows[:100])  # every position, the last included
    for r in (0.7, 0.3, 0.0, 1.0):
        preset = CalibrationSpec.from_preset("authors", top_k=2, mask_ratio=r)
        assert (preset.top_k, preset.examples, preset.positions, preset.batch_size) == (10, 100, "all", 1)
        cal = calibrate(m, rows, preset, pad_token_id=PAD)
        cut = int(r * len(ordered))  # the released threshold: sorted(values)[-int(r * N)]
        expected = float(ordered[-cut] if cut else ordered[0])
        assert cal.num_positions == len(ordered) and cal.num_sequences == 100
        if dtype == torch.bfloat16:  # P_topk rounded to bf16, as the released code's softmax and sum give it
            assert cal.tau == expected, r
        else:
            assert cal.tau == pytest.approx(expected, abs=1e-6), r


def test_order_statistic_is_the_released_index():
    g = np.random.default_rng(0)
    for n in (1, 2, 3, 10, 37):
        v = g.random(n)
        for r in (0.0, 0.01, 0.3, 0.5, 0.7, 0.999, 1.0):
            m = int(r * n)
            assert order_statistic(torch.tensor(v), r) == sorted(v.tolist())[-m]


def test_presets_and_overrides():
    s = CalibrationSpec.from_preset("paper", top_k=3, mask_ratio=0.6, seed=7)
    paper = (s.top_k, s.examples, s.positions, s.statistic, s.sample, s.seed)
    assert paper == (3, 1000, "labels", "quantile", "random", 7)
    s = CalibrationSpec.from_preset("authors", top_k=3, mask_ratio=0.6, calibration_top_k=3, examples=50)
    assert (s.top_k, s.examples, s.statistic, s.round_to_logits) == (3, 50, "order", True)
    assert sample_indices(10, examples=4, rule="first") == [0, 1, 2, 3]
    a = sample_indices(1000, examples=5, seed=1)
    assert a == sorted(a) == sample_indices(1000, examples=5, seed=1)
    assert a != sample_indices(1000, examples=5, seed=2)


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"top_k": 0}, r"calibration's top_k .* in \[1, 100\]"),
        ({"mask_ratio": 1.3}, r"mask_ratio must be a finite number in \[0, 1\], got 1.3"),
        ({"mask_ratio": math.nan}, "mask_ratio must be a finite number in"),
        ({"positions": "prompt"}, "calibration_positions must be one of"),
        ({"examples": 0}, "calibration_examples must be an integer >= 1"),
        ({"preset": "mine"}, "calibration_preset must be one of"),
    ],
)
def test_bad_options(kw, message):
    with pytest.raises(UserError, match=message):
        spec(**kw)


def test_max_tokens_and_record(model, tmp_path):
    cal = calibrate(model, make_rows(), spec(max_tokens=50), pad_token_id=PAD, source={"file": "x.jsonl"})
    assert cal.num_positions == 50
    cal.save(tmp_path / "cal.json")
    assert Calibration.load(tmp_path / "cal.json") == cal


def test_dropped_records_are_skipped_and_counted(model):
    rows = make_rows(6)
    examples = [None if i % 3 == 0 else r for i, r in enumerate(rows)]
    cal = calibrate(model, examples, spec(), pad_token_id=PAD)
    kept = [r for r in examples if r is not None]
    assert cal.num_sequences == 4 and cal.source["records_skipped"] == 2
    assert cal.tau == calibrate(model, kept, spec(), pad_token_id=PAD).tau
    with pytest.raises(UserError, match="no calibration examples"):
        calibrate(model, [None, None], spec(), pad_token_id=PAD)


def test_no_label_positions(model):
    rows = [{"input_ids": [3, 4, 5], "labels": [-100, -100, -100]}]
    with pytest.raises(UserError, match="no calibration positions"):
        calibrate(model, rows, spec(), pad_token_id=PAD)


def test_exact_quantile_large_and_deterministic():
    g = torch.Generator().manual_seed(0)
    v = torch.rand(2_000_003, generator=g)
    for q in (0.0, 0.3, 0.5, 0.999, 1.0):
        assert exact_quantile(v, q) == pytest.approx(float(np.quantile(v.double().numpy(), q)), abs=1e-12)
    assert exact_quantile(v, 0.3) == exact_quantile(v.flip(0), 0.3)
