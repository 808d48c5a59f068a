"""Tiny local chat model, tokenizer and prompts for the RL tests: nothing is downloaded."""

from __future__ import annotations

import string
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RL_DATA = (ROOT / ".." / "shared" / "data" / "rl" / "math_level1_filtered.parquet").resolve()

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Four tiny arithmetic prompts in the question/answer layout.
QA_ROWS = [
    {"question": "1+1?", "answer": "2"},
    {"question": "2+2?", "answer": "4"},
    {"question": "3+3?", "answer": "6"},
    {"question": "4+4?", "answer": "8"},
]


def build_char_tokenizer():
    """A character-level tokenizer (printable ASCII + ChatML specials) with a ChatML chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(set(string.printable)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHATML
    return fast


def build_tiny_model(tok, seed: int = 0):
    """A random 2-layer Llama over ``tok``'s vocabulary (CPU, float32)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model
