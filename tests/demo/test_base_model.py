"""Stage 0: the tiny base model trains, its loss falls, it is cached by config and reloads."""

from __future__ import annotations

import json
import time

import pytest
from transformers import AutoTokenizer, LlamaForCausalLM

from sedsft.demo.base_model import BaseModelConfig, build_base_model, sample_responses
from sedsft.demo.world import build_eval_problems
from sedsft.errors import UserError


def test_tiny_base_model_trains_and_loss_falls(tiny_base):
    cfg, _, path, _ = tiny_base
    log = json.loads((path / "train_log.json").read_text())
    assert len(log["losses"]) == cfg.steps
    assert log["loss_last10"] < 0.6 * log["loss_first"]
    assert json.loads((path / "base_config.json").read_text())["hash"] == cfg.hash() == path.name


def test_second_build_reuses_the_cache(tiny_base):
    cfg, cache, path, first_seconds = tiny_base
    marker = path / "train_log.json"
    stamp = marker.stat().st_mtime_ns
    start = time.perf_counter()
    assert build_base_model(cfg, cache, progress=False) == path
    assert time.perf_counter() - start < max(0.5, first_seconds / 4)
    assert marker.stat().st_mtime_ns == stamp  # not rewritten
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] == [path.name]
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]  # no temporary folder left


def test_reloads_with_from_pretrained_and_samples(tiny_base):
    _, _, path, _ = tiny_base
    model = LlamaForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.vocab_size == len(tok)
    assert model.generation_config.eos_token_id == tok.eos_token_id
    problems = build_eval_problems(n_per_split=1)[:2]
    samples = sample_responses(model, tok, problems, n=3, max_new_tokens=16, seed=0)
    assert [len(s) for s in samples] == [3, 3]
    assert samples == sample_responses(model, tok, problems, n=3, max_new_tokens=16, seed=0)  # seeded


def test_config_hash_is_stable_and_sensitive():
    assert BaseModelConfig().hash() == BaseModelConfig().hash()
    assert BaseModelConfig(seed=1).hash() != BaseModelConfig().hash()
    assert len({BaseModelConfig.tiny().hash(), BaseModelConfig.quick().hash(), BaseModelConfig().hash()}) == 3


def test_bad_config_says_what_to_change():
    with pytest.raises(UserError, match="divisible by num_heads"):
        BaseModelConfig(hidden_size=30, num_heads=4)
    with pytest.raises(UserError, match="steps must be at least 1"):
        BaseModelConfig(steps=0)
