"""Fixtures for the evaluation tests: offline hub, the shared benchmark files, a tiny local chat model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ..tiny import char_tokenizer, tiny_llama

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA_DIR = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "benchmarks").resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"benchmark data not found at {DATA_DIR}")
    return DATA_DIR


@pytest.fixture(scope="session")
def tiny_chat_model():
    """(model, tokenizer): a random 2-layer Llama over the character vocabulary, eval mode, CPU."""
    tok = char_tokenizer()
    model = tiny_llama(tok, max_position_embeddings=4096).eval()
    return model, tok


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_chat_model) -> Path:
    """The tiny model saved as a local checkpoint folder (for the CLI)."""
    model, tok = tiny_chat_model
    path = tmp_path_factory.mktemp("tiny_ckpt")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
