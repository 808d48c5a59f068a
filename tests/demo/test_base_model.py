"""Stage 0: the tiny base model trains and is cached; the packaged file is used only for its own config."""

from __future__ import annotations

import json
import time

import pytest
import torch

from sedsft.demo.base_model import (
    PACKAGED,
    BaseModelConfig,
    build_base_model,
    export_base_model,
    packaged_model,
)
from sedsft.demo.tokenizer import build_tokenizer
from sedsft.errors import UserError
from sedsft.models import load_local_model


def test_tiny_base_model_trains_and_loss_falls(tiny_base):
    cfg, _, path, _ = tiny_base
    log = json.loads((path / "train_log.json").read_text())
    assert len(log["losses"]) == cfg.steps
    assert log["loss_last10"] < 0.6 * log["loss_first"]
    info = json.loads((path / "base_config.json").read_text())
    assert info["hash"] == cfg.hash() == path.name and info["source"] == "trained"


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


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_packaged_file_round_trips_and_is_refused_for_another_config(tiny_base, tmp_path):
    cfg, _, path, _ = tiny_base
    file = export_base_model(path, tmp_path / "base.safetensors")
    assert file.stat().st_size < 100_000  # 14k parameters in float32, the tied head stored once
    trained, tok = load_local_model(path, dtype="float32", device="cpu")
    found = packaged_model(cfg, build_tokenizer(), file)
    assert found is not None and _same_weights(found[0], trained)
    assert found[1]["parameters"] == json.loads((path / "train_log.json").read_text())["parameters"]
    # a fresh cache is filled from the package, without training, and loads with the one model loader
    unpacked = build_base_model(cfg, tmp_path / "cache", progress=False, packaged=file)
    assert json.loads((unpacked / "base_config.json").read_text())["source"] == "package"
    model, tok2 = load_local_model(unpacked, dtype="float32", device="cpu")
    assert _same_weights(model, trained) and model.generation_config.eos_token_id == tok2.eos_token_id
    ids = tok2("1+2+3=?", return_tensors="pt")["input_ids"]
    torch.testing.assert_close(model(ids).logits, trained(ids).logits)
    # another config (one more step) or another vocabulary never gets these weights
    assert packaged_model(BaseModelConfig.tiny(steps=cfg.steps + 1), build_tokenizer(), file) is None
    assert packaged_model(cfg, build_tokenizer(words=("\\boxed{", "user")), file) is None


def test_rebuild_retrains_even_with_a_matching_package(tiny_base, tmp_path):
    cfg, _, path, _ = tiny_base
    file = export_base_model(path, tmp_path / "base.safetensors")
    cache = tmp_path / "cache"
    build_base_model(cfg, cache, progress=False, packaged=file)
    again = build_base_model(cfg, cache, progress=False, packaged=file, rebuild=True)
    assert json.loads((again / "base_config.json").read_text())["source"] == "trained"
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_the_shipped_file_matches_the_default_config():
    """The packaged weights are the default config's (regenerate: python -m sedsft.demo.base_model)."""
    assert PACKAGED.is_file() and PACKAGED.stat().st_size < 1_000_000
    found = packaged_model(BaseModelConfig(), build_tokenizer())
    assert found is not None, (
        "src/sedsft/demo/base_model.safetensors is stale: rerun python -m sedsft.demo.base_model"
    )
    model, log = found
    assert sum(p.numel() for p in model.parameters()) == log["parameters"]


def test_config_hash_is_stable_and_sensitive():
    assert BaseModelConfig().hash() == BaseModelConfig().hash()
    assert BaseModelConfig(seed=1).hash() != BaseModelConfig().hash()
    assert BaseModelConfig.tiny().hash() != BaseModelConfig().hash()


def test_bad_config_says_what_to_change():
    with pytest.raises(UserError, match="divisible by num_heads"):
        BaseModelConfig(hidden_size=30, num_heads=4)
    with pytest.raises(UserError, match="steps must be at least 1"):
        BaseModelConfig(steps=0)
