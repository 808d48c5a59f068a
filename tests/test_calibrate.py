"""tau calibration against an independent exact quantile, and the share of penalised positions."""

import math

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sedsft.calibrate import Calibration, calibrate, calibrate_tau, exact_quantile


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=67, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2,
    )  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


def make_batches(n_batches=5, B=4, T=23, V=67, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        x = torch.randint(0, V, (B, T), generator=g)
        mask = torch.ones_like(x)
        mask[0, T - 5 :] = 0  # padding
        labels = x.clone()
        labels[:, : T // 3] = -100  # prompt
        labels[mask == 0] = -100
        out.append({"input_ids": x, "attention_mask": mask, "labels": labels})
    return out


def direct_topk_mass(model, batches, k, positions):
    vals = []
    with torch.no_grad():
        for b in batches:
            probs = (
                model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
                .logits.double()
                .softmax(-1)
            )
            mass = probs.topk(k, -1).values.sum(-1)  # [B, T]
            if positions == "labels":
                sel = torch.zeros_like(b["labels"], dtype=torch.bool)
                sel[:, :-1] = b["labels"][:, 1:] != -100
            else:
                sel = b["attention_mask"].bool()
            vals.append(mass[sel])
    return torch.cat(vals).numpy()


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("r", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("positions", ["labels", "all"])
def test_tau_is_the_exact_quantile(model, k, r, positions):
    batches = make_batches()
    tau = calibrate_tau(model, batches, top_k=k, mask_ratio=r, positions=positions)
    direct = direct_topk_mass(model, batches, k, positions)
    assert tau == pytest.approx(float(np.quantile(direct, 1 - r)), abs=1e-6)


@pytest.mark.parametrize("r", [0.1, 0.5, 0.7, 0.9])
def test_penalised_share_is_one_minus_r(model, r):
    batches = make_batches(n_batches=8)
    cal = calibrate(model, batches, top_k=2, mask_ratio=r)
    direct = direct_topk_mass(model, batches, 2, "labels")
    penalised = int((direct < cal.tau).sum())  # M_t = 1[P_topk < tau]
    assert abs(penalised - (1 - r) * cal.num_positions) <= 1
    assert cal.num_positions == direct.size


def test_max_tokens_and_record(model, tmp_path):
    cal = calibrate(model, make_batches(), max_tokens=50, sample={"file": "x.jsonl", "seed": 3})
    assert cal.num_positions == 50
    cal.save(tmp_path / "cal.json")
    assert Calibration.load(tmp_path / "cal.json") == cal


def test_exact_quantile_large_and_deterministic():
    g = torch.Generator().manual_seed(0)
    v = torch.rand(2_000_003, generator=g)
    for q in (0.0, 0.3, 0.5, 0.999, 1.0):
        assert exact_quantile(v, q) == pytest.approx(float(np.quantile(v.double().numpy(), q)), abs=1e-12)
    assert exact_quantile(v, 0.3) == exact_quantile(v.flip(0), 0.3)


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"top_k": 0}, "top_k must be an integer >= 1"),
        ({"mask_ratio": 1.3}, r"mask_ratio must be in \[0, 1\], got 1.3"),
        ({"mask_ratio": math.nan}, "mask_ratio must be in"),
        ({"positions": "prompt"}, "positions must be one of"),
    ],
)
def test_bad_options(model, kw, message):
    with pytest.raises(ValueError, match=message):
        calibrate_tau(model, make_batches(1), **kw)


def test_no_label_positions(model):
    b = make_batches(1)[0]
    b["labels"][:] = -100
    with pytest.raises(ValueError, match="no calibration positions"):
        calibrate_tau(model, [b])
