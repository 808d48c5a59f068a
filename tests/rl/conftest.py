"""Fixtures for the RL tests: offline hub, a tiny random chat model saved locally, small prompt files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .tiny import QA_ROWS, RL_DATA, build_char_tokenizer, build_tiny_model

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny random chat model (weights + tokenizer) saved as a local checkpoint folder."""
    tok = build_char_tokenizer()
    model = build_tiny_model(tok)
    path = tmp_path_factory.mktemp("tiny_ckpt")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture()
def qa_file(tmp_path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in QA_ROWS), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def rl_data() -> Path:
    if not RL_DATA.is_file():
        pytest.skip(f"the paper's RL parquet is not at {RL_DATA}")
    return RL_DATA
