"""``sedsft.patch(model)``: the patched forward's loss and gradients against the objective on the model's own
logits, for every objective, tied and untied heads, several architectures, with and without
``num_items_in_batch``; exact unpatch, statistics, calibration files, PEFT."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import (
    GemmaConfig,
    GemmaForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

import sedsft
from sedsft import losses
from sedsft.calibrate import Calibration, CalibrationSpec

from .losses.cases import OBJECTIVE_CASES, case_id

V = 67
ARCHS = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "gemma": (GemmaConfig, GemmaForCausalLM),  # scaled embeddings, tied by default
}


def tiny(arch: str, *, tie: bool, seed: int = 0):
    config_cls, model_cls = ARCHS[arch]
    torch.manual_seed(seed)
    cfg = config_cls(
        vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, tie_word_embeddings=tie, max_position_embeddings=64,
    )  # fmt: skip
    return model_cls(cfg).double().eval()


def batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # right padding in one row
    labels = ids.clone()
    labels[:, :3] = -100  # a prompt
    labels[mask == 0] = -100
    return ids, mask, labels


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("case", OBJECTIVE_CASES, ids=case_id)
def test_patched_loss_and_grads_equal_objective_on_logits(case, tie, arch):
    """With num_items_in_batch (Trainer's accumulation: the sum over it) and without (the kept-token mean)."""
    name, opts = case
    ref_model = tiny(arch, tie=tie)
    model = copy.deepcopy(ref_model)
    sedsft.patch(model, name, **opts)
    ids, mask, labels = batch()
    for num_items in (None, 40):
        ref_model.zero_grad()
        model.zero_grad()
        logits = ref_model(input_ids=ids, attention_mask=mask).logits  # [B, T, V], the unpatched head
        ref = losses.objective_loss(name, logits, labels, num_items_in_batch=num_items, **opts)
        ref.backward()
        out = model(input_ids=ids, attention_mask=mask, labels=labels, num_items_in_batch=num_items)
        assert out.logits is None and out.hidden_states is None
        out.loss.backward()
        torch.testing.assert_close(out.loss, ref, atol=1e-10, rtol=1e-10)
        got, want = grads(model), grads(ref_model)
        assert got.keys() == want.keys() and len(got) == len(list(model.parameters()))
        for k in want:
            torch.testing.assert_close(got[k], want[k], atol=1e-10, rtol=1e-9, msg=k)


@pytest.mark.parametrize("arch, tie", [("qwen3", True), ("mistral", False), ("gemma", True)])
def test_more_architectures(arch, tie):
    """Qwen3 (q/k norms), Mistral and Gemma (scaled embeddings, tied head) under SED-SFT."""
    ref_model = tiny(arch, tie=tie)
    model = copy.deepcopy(ref_model)
    ids, mask, labels = batch(2)
    ref = losses.sed(ref_model(input_ids=ids, attention_mask=mask).logits, labels, tau=0.05)
    ref.backward()
    sedsft.patch(model, "sed", tau=0.05)
    model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    got, want = grads(model), grads(ref_model)
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-10, rtol=1e-9, msg=k)


def test_statistics_equal_the_objectives_and_accumulate():
    model = tiny("llama", tie=False)
    ids, mask, labels = batch()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    # tau at the median top-2 mass: about half the positions penalised
    probs = logits[:, :-1][labels[:, 1:] != -100].softmax(-1)  # [N, V] at the scored positions
    tau = float(probs.topk(2, dim=-1).values.sum(-1).median())
    want = losses.sed(logits, labels, tau=tau, return_stats=True).stats
    p = sedsft.patch(model, "sed", tau=tau)
    assert sedsft.patched(model) is p
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, labels=labels)
    for k in ("tokens", "masked", "penalty", "prob", "entropy", "topk_mass", "correct"):
        torch.testing.assert_close(getattr(p.last, k), getattr(want, k), atol=1e-9, rtol=1e-9, msg=k)
    means = want.means()
    assert 0 < means["mask_rate"] < 1
    assert p.stats("train") == {} and p.stats("eval") == pytest.approx(means)  # model.eval(): eval sums
    with torch.no_grad():
        model.train()
        model(input_ids=ids, attention_mask=mask, labels=labels)
        model(input_ids=ids, attention_mask=mask, labels=labels)
    assert p.stats("train", reset=False) == pytest.approx(means)  # two equal batches: the same means
    assert p.stats("train") == pytest.approx(means) and p.stats("train") == {}


def test_unpatch_restores_forward_exactly_and_no_labels_is_the_original():
    model = tiny("llama", tie=True)
    ids, mask, labels = batch()
    before = model(input_ids=ids, attention_mask=mask)
    sedsft.patch(model, "ce")
    assert "forward" in vars(model)
    # without labels: the original forward, logits and all
    torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits, before.logits)
    # labels given positionally (the 6th parameter) are found as well
    positional = model(ids, mask, None, None, None, labels)
    torch.testing.assert_close(positional.loss, losses.cross_entropy(before.logits, labels))
    sedsft.patch(model, "dft")  # patching again replaces the settings
    assert sedsft.patched(model).objective == "dft"
    sedsft.unpatch(model)
    assert "forward" not in vars(model) and sedsft.patched(model) is None
    assert type(model).forward is LlamaForCausalLM.forward
    native = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert native.logits is not None
    with pytest.raises(ValueError, match="not patched"):
        sedsft.unpatch(model)


def test_a_forward_wrapped_after_the_patch_is_kept_and_unpatch_refuses():
    """As accelerate's prepare does with mixed precision: a wrapper of the patched forward, set on the instance."""
    model = tiny("llama", tie=True)
    ids, mask, labels = batch()
    want = losses.cross_entropy(model(input_ids=ids, attention_mask=mask).logits, labels)
    sedsft.patch(model, "ce")
    patched_forward = model.forward
    model.forward = lambda *args, **kwargs: patched_forward(*args, **kwargs)
    torch.testing.assert_close(model(input_ids=ids, attention_mask=mask, labels=labels).loss, want)
    with pytest.raises(ValueError, match="wrapped again"):
        sedsft.unpatch(model)
    model.forward = patched_forward  # unwrapped: unpatch restores the class's forward
    sedsft.unpatch(model)
    assert "forward" not in vars(model)


def test_return_logits_and_hidden_states_when_asked():
    model = tiny("qwen2", tie=False)
    ids, mask, labels = batch()
    want = model(input_ids=ids, attention_mask=mask).logits
    sedsft.patch(model, "ce", return_logits=True)
    out = model(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=True)
    torch.testing.assert_close(out.logits, want)
    assert len(out.hidden_states) == 3
    torch.testing.assert_close(out.loss, losses.cross_entropy(want, labels))


def test_tau_from_a_calibration_file(tmp_path):
    path = tmp_path / "sedsft_calibration.json"
    Calibration(0.125, CalibrationSpec(top_k=3, mask_ratio=0.7)).save(path)
    p = sedsft.patch(tiny("llama", tie=True), "sed", calibration=str(path))
    assert p.options == {"tau": 0.125, "top_k": 3}
    p = sedsft.patch(tiny("llama", tie=True), "sed", calibration=str(path), top_k=2, lam=2.0)
    assert p.options == {"tau": 0.125, "top_k": 2, "lam": 2.0}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"objective": "sed"}, "needs tau"),
        ({"objective": "ce", "tau": 0.5}, "has no tau"),
        ({"objective": "sed", "tau": 0.5, "calibration": "x.json"}, "not both"),
        ({"objective": "sed", "tau": 0.5, "beta": 0.7}, "no option"),
        ({"objective": "gem", "beta": -1.0}, "beta must be"),
        ({"objective": "nope"}, "unknown objective"),
        ({"objective": "ce", "impl": "cuda"}, "impl must be"),
    ],
)
def test_bad_settings_are_refused_at_patch_time(kwargs, match):
    model = tiny("llama", tie=True)
    with pytest.raises(ValueError, match=match):
        sedsft.patch(model, **kwargs)
    assert "forward" not in vars(model)


def test_peft_lora_patched_before_or_after_get_peft_model():
    from peft import LoraConfig, get_peft_model

    ids, mask, labels = batch()
    cfg = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    ref = get_peft_model(tiny("llama", tie=False), LoraConfig(**cfg))
    torch.manual_seed(3)
    want = losses.sed(ref(input_ids=ids, attention_mask=mask).logits, labels, tau=0.05)
    want.backward()
    for order in ("before", "after"):
        base = tiny("llama", tie=False)
        if order == "before":
            sedsft.patch(base, "sed", tau=0.05)
        model = get_peft_model(base, LoraConfig(**cfg))
        model.load_state_dict(ref.state_dict())
        if order == "after":
            sedsft.patch(model, "sed", tau=0.05)
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        assert out.logits is None
        out.loss.backward()
        torch.testing.assert_close(out.loss, want, atol=1e-10, rtol=1e-10)
        got, exp = grads(model), grads(ref)
        assert got.keys() == exp.keys() and all("lora" in k for k in got)  # the frozen head gets no gradient
        for k in exp:
            torch.testing.assert_close(got[k], exp[k], atol=1e-10, rtol=1e-9, msg=k)


def test_a_lora_adapter_on_the_head_is_refused():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny("llama", tie=False), LoraConfig(r=2, target_modules=["lm_head"]))
    with pytest.raises(ValueError, match="LoRA adapter"):
        sedsft.patch(model, "ce")
