"""A tiny random Llama and a character-level ChatML tokenizer, built locally (no hub), shared by the tests."""

from __future__ import annotations

import json
import string

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
WORDS = ["system", "user", "assistant"]

RECORDS = [
    {"question": "What is 2+3?", "response": "2+3 = 5. The answer is \\boxed{5}."},
    {"question": "Compute 7*6.", "response": "7*6 = 42, so \\boxed{42}."},
    {"question": "Is 9 > 4?", "response": 'Yes: 9 - 4 = 5 > 0. <b>&"quoted"</b> \\boxed{yes}'},
    {"question": "Half of 10?", "response": "10/2 = 5\nSo the answer is 5."},
    {"question": "1+1", "response": "2"},
    {"question": "Sum 1..4", "response": "1+2+3+4 = 10 \\boxed{10}"},
]


def make_tokenizer() -> PreTrainedTokenizerFast:
    chars = [c for c in string.printable if c not in "\x0b\x0c"]
    vocab = {t: i for i, t in enumerate(SPECIAL + chars + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    pieces = "|".join(WORDS) + r"|[\s\S]"
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(pieces), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHATML
    return tok


def make_model(vocab_size: int, *, seed: int = 0) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        initializer_range=0.5,  # large random weights: peaked, varied next-token distributions
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def model(tokenizer):
    return make_model(len(tokenizer))


@pytest.fixture(scope="session")
def records():
    return [dict(r) for r in RECORDS]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, model, tokenizer):
    path = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def data_file(tmp_path_factory, records):
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path
