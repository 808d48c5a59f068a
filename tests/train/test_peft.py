"""PEFT on the fused path: a frozen head allocates no weight gradient (measured), a LoRA on the head falls
back to the logits path with a one-line notice, a trainable copy of the head (modules_to_save) is fused."""

from __future__ import annotations

import logging
import weakref

import pytest
import torch
from peft import LoraConfig
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoModelForCausalLM, AutoTokenizer

from sedsft.data import SFTCollator, build_sft_dataset, load_records
from sedsft.errors import UserError
from sedsft.losses.head import unwrap
from sedsft.train import SEDSFTConfig, SEDSFTTrainer

from ..tiny import char_tokenizer, tiny_llama


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensors that ATen ops allocate (views and in-place results excluded), while alive: the
    peak, and the shapes allocated."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.shapes: list[tuple[tuple[int, ...], torch.dtype]] = []
        self._seen: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if not isinstance(t, torch.Tensor) or t._base is not None:
                continue
            key = t.untyped_storage().data_ptr()
            if key in self._seen or t.untyped_storage().nbytes() == 0:
                continue  # in place, or an alias of a tensor already counted
            nbytes = t.untyped_storage().nbytes()
            self._seen.add(key)
            self.live += nbytes
            self.peak = max(self.peak, self.live)
            self.shapes.append((tuple(t.shape), t.dtype))
            weakref.finalize(t, self._free, key, nbytes)
        return out


def _trainer(tmp_path, tiny_ckpt, peft_config, loss_impl="auto"):
    tok = AutoTokenizer.from_pretrained(tiny_ckpt, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_ckpt, local_files_only=True, dtype=torch.float32)
    args = SEDSFTConfig(
        output_dir=str(tmp_path), objective="sed", tau=0.5, loss_impl=loss_impl, use_cpu=True, bf16=False,
        report_to="none",
    )  # fmt: skip
    records = [{"question": "1+1?", "answer": "2"}]
    return tok, SEDSFTTrainer(
        model, args=args, train_dataset=records, processing_class=tok, peft_config=peft_config
    )


def _batch(tok, train_file):
    ds, _ = build_sft_dataset(load_records(train_file), tok, max_length=128)
    return SFTCollator(tok.pad_token_id)([ds[i] for i in range(4)])


def _step_memory(trainer, batch) -> LiveBytes:
    """One loss + backward through SEDSFTTrainer.compute_loss, measured."""
    n = int((batch["labels"][:, 1:] != -100).sum())
    trainer.model.zero_grad(set_to_none=True)
    with LiveBytes() as mem:
        trainer.compute_loss(trainer.model, batch, num_items_in_batch=n).backward()
        del n
    return mem


def test_frozen_head_allocates_no_weight_gradient(tmp_path, tiny_ckpt, train_file, monkeypatch):
    """A head large against everything else in the step (16k vocabulary, 1 MiB of engine buffers), so
    that its [V, d] fp32 weight gradient shows in the peak."""
    ckpt = tmp_path / "wide"
    tiny_llama(char_tokenizer(), vocab_size=16384, tie_word_embeddings=False).save_pretrained(ckpt)
    char_tokenizer().save_pretrained(ckpt)
    monkeypatch.setenv("SEDSFT_FUSED_BUDGET_MB", "1")
    tok, trainer = _trainer(tmp_path, ckpt, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    assert trainer.loss_impl == "fused"
    head = unwrap(trainer.model).get_output_embeddings().weight
    assert not head.requires_grad  # LoRA freezes the base model, head included
    batch = _batch(tok, train_file)
    frozen = _step_memory(trainer, batch)
    assert head.grad is None
    head.requires_grad_(True)  # the same model with a trainable head, for comparison
    trainable = _step_memory(trainer, batch)
    assert head.grad is not None
    shape = tuple(head.shape)
    assert (shape, torch.float32) in trainable.shapes  # the weight gradient the frozen step never makes
    assert not any(s == shape for s, _ in frozen.shapes)
    assert frozen.peak <= trainable.peak - head.numel() * 4  # at least one [V, d] fp32 less at the peak


def test_lora_on_the_head_is_refused_in_one_line(tmp_path, tiny_ckpt):
    """TRL 1.16 refuses a LoRA adapter on lm_head in SFTTrainer; sedsft says so before TRL, with the alternative."""
    with pytest.raises(
        UserError, match=r"LoRA adapter on the output head \(lm_head\).*modules_to_save lm_head"
    ):
        _trainer(tmp_path, tiny_ckpt, LoraConfig(r=4, target_modules=["q_proj", "lm_head"]))


def test_unfusable_head_falls_back_with_a_notice(tmp_path, tiny_ckpt, caplog):
    tok = AutoTokenizer.from_pretrained(tiny_ckpt, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_ckpt, local_files_only=True)
    model.config.final_logit_softcapping = 30.0
    args = SEDSFTConfig(output_dir=str(tmp_path), objective="ce", use_cpu=True, bf16=False, report_to="none")
    with caplog.at_level(logging.WARNING, logger="sedsft"):
        trainer = SEDSFTTrainer(model, args=args, train_dataset=[{"question": "1+1?", "answer": "2"}],
                                processing_class=tok)  # fmt: skip
    assert trainer.loss_impl == "logits"
    notices = [r.getMessage() for r in caplog.records if "logits path" in r.getMessage()]
    assert len(notices) == 1 and "soft-capped" in notices[0] and "\n" not in notices[0]


def test_trainable_head_copy_is_fused(tmp_path, tiny_ckpt, train_file):
    """modules_to_save=["lm_head"]: PEFT trains a copy of the head; the fused loss uses (and trains) that copy."""
    lora = LoraConfig(r=4, target_modules=["q_proj"], modules_to_save=["lm_head"])
    tok, trainer = _trainer(tmp_path, tiny_ckpt, lora)
    assert trainer.loss_impl == "fused"
    batch = _batch(tok, train_file)
    n = int((batch["labels"][:, 1:] != -100).sum())
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    fused = trainer.compute_loss(trainer.model, batch, num_items_in_batch=n)
    g_fused = torch.autograd.grad(fused, params)
    trainer.loss_impl = "logits"
    logits = trainer.compute_loss(trainer.model, batch, num_items_in_batch=n)
    g_logits = torch.autograd.grad(logits, params)
    torch.testing.assert_close(fused, logits, atol=1e-5, rtol=1e-5)
    for a, b in zip(g_fused, g_logits, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
