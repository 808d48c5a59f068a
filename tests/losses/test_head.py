"""The trainer's integration point: a Transformers causal LM through its own forward, head fused."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sedsft import losses

from .cases import OBJECTIVE_CASES, case_id


def tiny_llama(tie: bool, **extra):
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=tie, **extra,
    )  # fmt: skip
    return LlamaForCausalLM(cfg).double()


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("case", OBJECTIVE_CASES, ids=case_id)
def test_fused_forward_equals_logits(tie, case):
    name, opts = case
    model = tiny_llama(tie)
    x = torch.randint(0, 61, (3, 10))
    mask = torch.ones_like(x)
    mask[0, 7:] = 0  # right padding in one row
    labels = x.clone()
    labels[:, :4] = -100
    labels[mask == 0] = -100
    params = list(model.parameters())
    ref = losses.objective_loss(name, model(input_ids=x, attention_mask=mask).logits, labels, **opts)
    g_ref = torch.autograd.grad(ref, params)
    got = losses.fused_forward_loss(
        model, {"input_ids": x, "attention_mask": mask, "labels": labels}, objective=name, **opts
    )
    g_got = torch.autograd.grad(got, params)
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=1e-10)
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-9)


def test_softcapping_is_rejected():
    model = tiny_llama(True)
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(ValueError, match="soft-capped logits: use loss_impl='logits'"):
        losses.check_fusable(model)
