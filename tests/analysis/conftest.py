"""A tiny random Llama and a character-level ChatML tokenizer, built locally (no hub), shared by the tests."""

from __future__ import annotations

import json

import pytest

from ..tiny import char_tokenizer, tiny_llama

WORDS = ["system", "user", "assistant"]

RECORDS = [
    {"question": "What is 2+3?", "response": "2+3 = 5. The answer is \\boxed{5}."},
    {"question": "Compute 7*6.", "response": "7*6 = 42, so \\boxed{42}."},
    {"question": "Is 9 > 4?", "response": 'Yes: 9 - 4 = 5 > 0. <b>&"quoted"</b> \\boxed{yes}'},
    {"question": "Half of 10?", "response": "10/2 = 5\nSo the answer is 5."},
    {"question": "1+1", "response": "2"},
    {"question": "Sum 1..4", "response": "1+2+3+4 = 10 \\boxed{10}"},
]


@pytest.fixture(scope="session")
def tokenizer():
    return char_tokenizer(words=WORDS)


@pytest.fixture(scope="session")
def model(tokenizer):
    # large random weights (initializer_range 0.5): peaked, varied next-token distributions
    return tiny_llama(
        tokenizer, num_key_value_heads=4, max_position_embeddings=256, initializer_range=0.5
    ).eval()


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
