"""Packing and padding-free batches: the same documents give the same loss and gradients as padded ones.

Every objective, both loss paths, through ``SEDSFTTrainer.compute_loss`` (what training calls), with the
attention implementations that keep packed documents apart; then whole training runs with TRL's
``padding_free`` and ``packing`` flags against padded runs.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sedsft.data import SFTCollator, build_sft_dataset, load_records
from sedsft.errors import UserError
from sedsft.losses import OBJECTIVES
from sedsft.train import SEDSFTConfig, SEDSFTTrainer
from sedsft.train.trainer import check_packed_attention

from .worker import train

OPTIONS = {"sed": {"tau": 0.5}}  # a given tau: no calibration in these unit checks


def test_collator_restarts_positions_and_cuts_labels_at_document_starts():
    rows = [
        {"input_ids": [11, 12, 13], "labels": [11, 12, 13]},  # a document whose first token is a label
        {
            "input_ids": [21, 22, 23, 24, 25],
            "labels": [-100, 22, 23, 24, 25],
            "seq_lengths": [2, 3],
        },  # a pack
    ]
    batch = SFTCollator(0, padding_free=True, pad_to_multiple_of=4)(rows)
    assert batch["input_ids"].tolist() == [[11, 12, 13, 21, 22, 23, 24, 25]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2]]
    # 21 and 23 open documents: never predicted from 13 or 22, the last tokens before them
    assert batch["labels"].tolist() == [[-100, 12, 13, -100, 22, -100, 24, 25]]
    assert batch["cu_seq_lens_q"].tolist() == [0, 3, 5, 8] and batch["max_length_q"] == 3
    assert "attention_mask" not in batch  # Transformers detects the documents only without one
    padded = SFTCollator(0, padding_free=True, pad_to_multiple_of=5)(rows[:1])
    assert padded["labels"].tolist() == [[-100, 12, 13, -100, -100]]
    assert padded["position_ids"].tolist() == [[0, 1, 2, 0, 1]]


def _trainer(tmp_path, tiny_ckpt, objective, impl, attn="sdpa", **extra):
    tok = AutoTokenizer.from_pretrained(tiny_ckpt, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        tiny_ckpt, local_files_only=True, dtype=torch.float64, attn_implementation=attn
    )
    args = SEDSFTConfig(
        output_dir=str(tmp_path), objective=objective, loss_impl=impl, use_cpu=True, bf16=False,
        report_to="none", **OPTIONS.get(objective, {}), **extra,
    )  # fmt: skip
    return tok, SEDSFTTrainer(
        model, args=args, train_dataset=[{"question": "1+1?", "answer": "2"}], processing_class=tok
    )


def _loss_and_grads(trainer, batch, num_items):
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, batch, num_items_in_batch=num_items)
    loss.backward()
    return loss.detach(), {
        n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None
    }


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("impl", ["fused", "logits"])
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_padding_free_equals_padded(tmp_path, tiny_ckpt, train_file, objective, impl, attn):
    tok, trainer = _trainer(tmp_path, tiny_ckpt, objective, impl, attn)
    assert trainer.loss_impl == impl
    ds, _ = build_sft_dataset(load_records(train_file), tok, max_length=128)
    rows = [ds[i] for i in range(5)]  # documents of different lengths
    padded = SFTCollator(tok.pad_token_id)(rows)
    flat = SFTCollator(tok.pad_token_id, padding_free=True)(rows)
    n = int((padded["labels"][:, 1:] != -100).sum())
    assert n == int((flat["labels"][:, 1:] != -100).sum())  # Trainer's num_items_in_batch is the same
    loss_p, grads_p = _loss_and_grads(trainer, padded, n)
    loss_f, grads_f = _loss_and_grads(trainer, flat, n)
    torch.testing.assert_close(loss_f, loss_p, atol=1e-12, rtol=1e-10)
    assert grads_p.keys() == grads_f.keys() and grads_p
    for k in grads_p:
        torch.testing.assert_close(grads_f[k], grads_p[k], atol=1e-12, rtol=1e-9, msg=k)


def test_packed_documents_do_not_see_each_other(tmp_path, tiny_ckpt, train_file):
    """The check above can fail: the same flat row scored as one document (no position_ids) differs."""
    tok, trainer = _trainer(tmp_path, tiny_ckpt, "ce", "fused")
    ds, _ = build_sft_dataset(load_records(train_file), tok, max_length=128)
    flat = SFTCollator(tok.pad_token_id, padding_free=True)([ds[i] for i in range(3)])
    n = int((flat["labels"][:, 1:] != -100).sum())
    with torch.no_grad():
        apart = trainer.compute_loss(trainer.model, flat, num_items_in_batch=n)
        joined = trainer.compute_loss(
            trainer.model, {"input_ids": flat["input_ids"], "labels": flat["labels"]}, num_items_in_batch=n
        )
    assert abs(apart.item() - joined.item()) > 1e-4


@pytest.mark.parametrize("flag", [{"padding_free": True}, {"packing": True, "max_length": 256}])
def test_training_runs_match_padded_runs(tmp_path, tiny_ckpt, train_file, flag):
    """TRL's flags start up, tau is calibrated on the documents, and one optimizer step over all 16
    documents is the padded run's step."""
    kw = dict(per_device=16, accum=1, steps=1, objective="sed", loss_impl="fused")
    padded = train(tmp_path / "padded", tiny_ckpt, train_file, **kw)
    flat = train(tmp_path / "flat", tiny_ckpt, train_file, **kw, **flag)
    assert flat.padding_free and not padded.padding_free
    assert flat.tau == padded.tau
    if "packing" in flag:
        assert len(flat.train_dataset) < len(padded.train_dataset)  # 16 documents in fewer rows
    l1 = [h["loss"] for h in padded.state.log_history if "loss" in h]
    l2 = [h["loss"] for h in flat.state.log_history if "loss" in h]
    assert l2 == pytest.approx(l1, abs=1e-5)
    for (k, a), b in zip(padded.model.state_dict().items(), flat.model.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, atol=2e-6, rtol=1e-5, msg=k)


def test_padding_free_refuses_what_cannot_keep_documents_apart(tmp_path, tiny_ckpt, train_file):
    with pytest.raises(UserError, match="packing_strategy 'wrapped'"):
        train(tmp_path, tiny_ckpt, train_file, per_device=2, accum=1, steps=1, objective="ce",
              packing=True, packing_strategy="wrapped", max_length=64)  # fmt: skip
    _, trainer = _trainer(tmp_path, tiny_ckpt, "ce", "fused")
    trainer.model.config._attn_implementation = "paged|sdpa"  # reads a KV cache; no document boundaries
    with pytest.raises(UserError, match="attention implementation that honours position_ids"):
        check_packed_attention(trainer.model)
