"""A plain ``transformers.Trainer`` on a patched model equals ``SEDSFTTrainer``: same tau, data order and seed
give the same logged losses, the same statistics, the same weights and the same evaluation."""

from __future__ import annotations

import pytest
import torch

import sedsft
from sedsft.data import SFTCollator, build_sft_dataset, load_records

from .worker import train

STATS = ("mask_rate", "de_penalty", "gold_prob", "entropy", "topk_mass", "top1_acc")


def plain_trainer_run(out, model_dir, data, *, tau: float, steps: int):
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    sedsft.patch(model, "sed", tau=tau)
    ds, _ = build_sft_dataset(load_records(data), tok, max_length=128)
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_steps=steps,
        optim="sgd",
        learning_rate=0.5,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        max_grad_norm=0.0,
        seed=0,
    )
    trainer = Trainer(model, args, train_dataset=ds, data_collator=SFTCollator(tok.pad_token_id))
    sedsft.PatchStatsCallback.attach(trainer)
    trainer.train()
    return trainer


def test_plain_trainer_with_the_patch_equals_sedsft_trainer(tmp_path, tiny_ckpt, train_file):
    tau, steps = 0.0315, 3  # inside the tiny model's P_top2 range: some positions penalised, some not
    ours = train(
        tmp_path / "sedsft", tiny_ckpt, train_file, per_device=2, accum=2, steps=steps, objective="sed",
        tau=tau, calibration_examples=None, calibration_batch_size=None,
    )  # fmt: skip
    plain = plain_trainer_run(tmp_path / "plain", tiny_ckpt, train_file, tau=tau, steps=steps)
    assert plain.model_accepts_loss_kwargs  # so Trainer passed num_items_in_batch: exact accumulation
    want = [h for h in ours.state.log_history if "loss" in h]
    got = [h for h in plain.state.log_history if "loss" in h]
    assert len(got) == len(want) == steps
    assert any(0 < h["mask_rate"] < 1 for h in want)
    for g, w in zip(got, want, strict=True):
        assert g["loss"] == pytest.approx(w["loss"], abs=1e-6)
        for s in STATS:
            assert g[s] == pytest.approx(w[s], abs=1e-6), s
    start = type(plain.model).from_pretrained(tiny_ckpt, local_files_only=True).state_dict()
    p_ours, p_plain = ours.model.state_dict(), plain.model.state_dict()
    assert any(not torch.equal(p_plain[k], start[k]) for k in start), "parameters did not change"
    for k in p_ours:
        torch.testing.assert_close(p_plain[k], p_ours[k], atol=2e-6, rtol=1e-5, msg=k)
    # evaluation: the patched forward gives the loss without logits, the callback the eval_ statistics
    want_eval, got_eval = ours.evaluate(ours.train_dataset), plain.evaluate(plain.train_dataset)
    for s in ("loss", *STATS):
        assert got_eval[f"eval_{s}"] == pytest.approx(want_eval[f"eval_{s}"], abs=1e-6), s
