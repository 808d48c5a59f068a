"""Tiny local model, tokenizer and data for the training tests: nothing is downloaded.

The tokenizer is a ``tokenizers`` WordLevel model over single characters plus the ChatML specials, with
a ChatML chat template; the model is a 2-layer random Llama (no dropout) with an untied LM head.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    chars = [c for c in string.printable if c not in "\x0b\x0c"]
    vocab = {t: i for i, t in enumerate(SPECIALS + chars)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    pieces = "|".join(s.replace("|", "\\|") for s in SPECIALS)
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(pieces + r"|[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHATML
    return tok


def tiny_model(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        attention_dropout=0.0,
        pad_token_id=0,
        eos_token_id=2,
        bos_token_id=None,
    )
    return LlamaForCausalLM(cfg)


def save_tiny_checkpoint(path: Path) -> Path:
    tok = tiny_tokenizer()
    tiny_model(len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def tiny_records(n: int = 16) -> list[dict]:
    """Arithmetic questions with short worked answers; a mix of layouts."""
    out = []
    for i in range(n):
        a, b = i % 7 + 1, (3 * i) % 5 + 2
        q, r = f"What is {a}+{b}?", f"{a} plus {b} is {a + b}. \\boxed{{{a + b}}}"
        out.append({"question": q, "response": r} if i % 2 else {"problem": q, "solution": r})
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
