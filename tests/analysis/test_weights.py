"""Effective gradient weights: the registry's w matches autograd, the curves match hand-worked forms,
the trainer's statistics report w on the penalised tokens, and the figure and table are written."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sedsft import losses
from sedsft.analysis.weights import (
    measured_weights,
    stationary_point,
    weight_curve,
    weights_table,
    write_weights,
)
from sedsft.errors import UserError
from sedsft.losses.logits import token_terms

from ..losses.cases import random_batch
from .helpers import check_png

WEIGHTED = [
    ("ce", {}),
    ("dft", {}),
    ("sed", {"tau": 0.45, "top_k": 2, "lam": 1.0}),
    ("sed", {"tau": 0.97, "top_k": 3, "lam": 4.0}),
    ("sed_nomask", {"lam": 2.0}),
]


@pytest.mark.parametrize("name,opts", WEIGHTED)
def test_registry_weight_times_ce_gradient_is_the_objective_gradient(name, opts):
    # a 13-way vocabulary with real top-k masses: the mask is on at some tokens and off at others
    g = torch.Generator().manual_seed(1)
    z = (torch.randn(40, 13, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    y = torch.randint(0, 13, (40,), generator=g)
    y[::2] = z.detach()[::2].argmax(-1)  # half the tokens have a likely gold token: p on both sides of p*
    obj = losses.get_objective(name)
    o = obj.options(**opts)
    terms, _, _ = token_terms(z, y, top_k=o.top_k)
    (grad,) = torch.autograd.grad(obj.loss(terms, o).sum(), z)
    ce_grad = torch.softmax(z.detach(), -1) - torch.nn.functional.one_hot(y, 13)
    w = obj.weight(terms, o)
    torch.testing.assert_close(grad, w[:, None] * ce_grad, atol=1e-12, rtol=1e-9)
    if name == "sed" and opts["lam"] > 1:
        assert bool((w < 0).any()) and bool((w == 1).any())  # both sides of p* and of the mask


def test_gem_has_no_scalar_weight():
    assert losses.get_objective("gem").weight is None


def test_curves_match_hand_worked_forms():
    ps = [0.05, 0.3, 0.5, 0.77, 0.95]
    assert weight_curve("ce", ps) == pytest.approx([1.0] * 5)
    assert weight_curve("dft", ps) == pytest.approx(ps)
    # the paper's lam = 1 factorises: 1 - 2p(p - 1/2) = (1 - p)(1 + 2p)
    assert weight_curve("sed", ps, lam=1.0) == pytest.approx([(1 - p) * (1 + 2 * p) for p in ps])
    assert weight_curve("sed", ps, lam=0.0) == pytest.approx([1.0] * 5)  # no penalty: CE
    b = 0.7  # GEM, two outcomes: (1 - q) / (1 - p), q the tempered gold probability
    q = [p ** (1 / b) / (p ** (1 / b) + (1 - p) ** (1 / b)) for p in ps]
    assert weight_curve("gem", ps, beta=b) == pytest.approx([(1 - qi) / (1 - p) for qi, p in zip(q, ps)])
    assert weight_curve("gem", [0.3, 0.5], beta=1.0) == pytest.approx([1.0, 1.0])  # beta 1 is CE


def test_stationary_point():
    assert stationary_point(2.0) == pytest.approx(0.809017, abs=1e-6)
    assert stationary_point(4.0) == pytest.approx(0.683013, abs=1e-6)
    assert stationary_point(1.0) is None and stationary_point(0.5) is None
    for lam in (1.5, 2.0, 4.0, 10.0):
        star = stationary_point(lam)
        below, at, above = weight_curve("sed", [star - 0.01, star, star + 0.01], lam=lam)
        assert below > 0 and abs(at) < 1e-9 and above < 0
    with pytest.raises(UserError, match="lam"):
        stationary_point(math.nan)
    with pytest.raises(UserError, match="strictly between"):
        weight_curve("ce", [0.0, 0.5])


def test_trainer_statistics_report_w_on_penalised_tokens():
    logits, labels = random_batch(3, 21, 17, seed=3, scale=3.0)
    labels[0, 1:] = logits[0, :-1].argmax(-1)  # one row of likely gold tokens: p on both sides of p*
    out = losses.sed(logits, labels, tau=0.97, top_k=2, lam=4.0, return_stats=True)
    z = logits[:, :-1][labels[:, 1:] != -100]
    y = labels[:, 1:][labels[:, 1:] != -100]
    probs = z.softmax(-1)
    p = probs.gather(1, y[:, None]).squeeze(1)
    pen = probs.topk(2, -1).values.sum(-1) < 0.97
    w = 1 + 4.0 * p - 8.0 * p * p  # 1 - 2 lam p (p - 1/2), expanded
    m = out.stats.means()
    assert m["mask_weight"] == pytest.approx(w[pen].mean().item())
    assert m["mask_neg_rate"] == pytest.approx((w[pen] < 0).double().mean().item())
    assert 0 < m["mask_neg_rate"] < 1
    # the fused engine reports the same, chunk by chunk (3 chunks here)
    g = torch.Generator().manual_seed(4)
    h = torch.randn(2, 12, 6, generator=g, dtype=torch.float64)
    head = torch.randn(17, 6, generator=g, dtype=torch.float64) * 2
    lab = torch.randint(0, 17, (2, 12), generator=g)
    opts = dict(objective="sed", tau=0.5, lam=4.0, return_stats=True)
    fused = losses.fused_linear(h, head, lab, chunk_size=8, **opts).stats.means()
    plain = losses.objective_loss("sed", h @ head.T, lab, tau=0.5, lam=4.0, return_stats=True).stats.means()
    assert fused["mask_weight"] == pytest.approx(plain["mask_weight"])
    assert fused["mask_neg_rate"] == pytest.approx(plain["mask_neg_rate"])
    ce = losses.cross_entropy(logits, labels, return_stats=True).stats.means()
    assert "mask_weight" not in ce and "mask_neg_rate" not in ce  # nothing penalised, nothing to report


def test_measured_weights_and_outputs(tmp_path):
    lines = [
        {"loss": 1.0, "step": 5, "mask_rate": 0.3, "mask_weight": 0.5, "mask_neg_rate": 0.1},
        {"loss": 0.8, "step": 10, "mask_rate": 0.2, "mask_weight": -0.1, "mask_neg_rate": 0.4},
        {"train_runtime": 3.0, "step": 10},
    ]
    path = tmp_path / "sedsft_metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    m = measured_weights(path)
    assert m.steps == [5, 10] and m.mean("mask_weight") == pytest.approx(0.2)
    assert m.mean("mask_neg_rate") == pytest.approx(0.25)
    files = write_weights(tmp_path / "w", lams=(1.0, 2.0, 4.0), measured={"lam=2": m})
    check_png(files["figure"])
    table = files["table"].read_text()
    assert "| 2 | 0.809 |" in table and "| 1 | none (w >= 0) |" in table
    assert "| lam=2 | 0.250 | 0.200 | 0.250 |" in table
    header = files["csv"].read_text().splitlines()[0]
    assert header.startswith("p,") and "SED-SFT lam=4" in header
    with pytest.raises(UserError, match="not found"):
        measured_weights(tmp_path / "missing.jsonl")
    assert weights_table([2.0], {}).count("\n") == 3


def test_analyze_weights_command(tmp_path, capsys):
    from sedsft.cli import main

    run = tmp_path / "sft_run"
    run.mkdir()
    line = {"loss": 1.0, "step": 5, "mask_rate": 0.3, "mask_weight": -0.5, "mask_neg_rate": 0.75}
    (run / "sedsft_metrics.jsonl").write_text(json.dumps(line) + "\n")
    out = tmp_path / "w"
    assert main(["analyze", "weights", "--lams", "1,3", "--runs", str(run), "--output_dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "lambda 3: p* = 0.7287" in printed and "| -0.500 | 0.750 |" in printed
    check_png(out / "weights.png")
    assert (
        main(["analyze", "weights", "--lams", "1,3", "--runs", str(run), "--output_dir", str(out)]) == 0
    )  # resumes
    assert main(["analyze", "weights", "--lams", "-1", "--output_dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lams" in err
