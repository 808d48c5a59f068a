"""The tiny local chat model the test folders share: nothing is downloaded.

A character-level tokenizer (printable ASCII, the ChatML specials, optional whole-word tokens) with a
ChatML chat template, and a random 2-layer Llama over its vocabulary whose config a test can adjust.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

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


def char_tokenizer(*, words: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """One token per printable character (plus each of ``words`` whole); pad <|endoftext|>, eos <|im_end|>."""
    chars = [c for c in string.printable if c not in "\x0b\x0c"]
    vocab = {t: i for i, t in enumerate(SPECIALS + chars + list(words))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    pieces = [s.replace("|", "\\|") for s in SPECIALS] + list(words) + [r"[\s\S]"]
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("|".join(pieces)), behavior="isolated")
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


def tiny_llama(tokenizer, *, seed: int = 0, **config) -> LlamaForCausalLM:
    """A random 2-layer Llama (hidden 32) over ``tokenizer``'s vocabulary; ``config`` overrides fields."""
    fields = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**{**fields, **config}))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model
