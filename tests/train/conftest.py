"""Fixtures for the training tests: a tiny local checkpoint and data files, built once per session."""

from __future__ import annotations

import os

import pytest

from .tiny import save_tiny_checkpoint, tiny_records, write_jsonl

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def train_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", tiny_records(16))
