"""Shared setup for the demo tests: offline Hugging Face, one CPU thread, and a session-wide tiny base model."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """(config, cache_dir, model_dir, seconds) of the tiny base model, trained once per test session."""
    import time

    import torch

    from sedsft.demo.base_model import BaseModelConfig, build_base_model

    torch.set_num_threads(1)
    cfg = BaseModelConfig.tiny()
    cache = tmp_path_factory.mktemp("base-cache")
    start = time.perf_counter()
    path = build_base_model(cfg, cache, progress=False)
    return cfg, cache, path, time.perf_counter() - start
