"""Stage 0 of the demo: a tiny Llama pre-trained from scratch on the diverse corpus, shipped with sedsft.

It stands in for the paper's instruct model: trained on every problem rendered with several solution
strategies (full chat-formatted sequences, loss on every token), it samples several strategies per
problem, which is the prior that SFT may or may not collapse.

Where it comes from. Training the default model takes minutes of CPU time (see ``docs/demo.md``), so
the trained weights ship inside the package (:data:`PACKAGED`, float32 safetensors, ~0.55 MB) with
the hash of the :class:`BaseModelConfig` that made them and a digest of the tokenizer's vocabulary in
the file's metadata. :func:`build_base_model` returns the folder ``cache_dir/<config hash>/`` (model,
tokenizer, ``base_config.json``, ``train_log.json``) and fills it, in this order of preference:

1. the cached folder, if it exists (``rebuild=False``);
2. the packaged weights, if their recorded config hash and vocabulary digest equal this config's and
   this tokenizer's (verified at every load: another config, world or training code never gets them);
3. training (:func:`train_base_model`), always with ``rebuild=True`` (``sedsft demo --rebuild_base``).

The folder is written to a temporary name and renamed, so a half-written copy is never used.
``python -m sedsft.demo.base_model`` retrains the default model and rewrites :data:`PACKAGED`: the
one command that regenerates the shipped file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from sedsft.data import SFTCollator
from sedsft.demo.tokenizer import DEMO_SYSTEM_PROMPT, build_tokenizer
from sedsft.demo.world import WORLD_VERSION, SumsExample, build_pretrain_corpus
from sedsft.errors import UserError
from sedsft.io import atomic_write_json, read_json
from sedsft.prompts import build_messages

# Bump when the training code changes what a config produces, so cached and packaged models are refused.
BASE_MODEL_VERSION = "1"
PACKAGED = Path(__file__).with_name("base_model.safetensors")
SOURCES = ("cache", "package", "trained")


@dataclass(frozen=True)
class BaseModelConfig:
    """Everything that determines the pre-trained base model; its :meth:`hash` names the cache folder."""

    seed: int = field(
        default=0, metadata={"help": "seed for the corpus, the initial weights and the batch order"}
    )
    hidden_size: int = field(default=64, metadata={"help": "model width"})
    num_layers: int = field(default=2, metadata={"help": "transformer blocks"})
    num_heads: int = field(default=4, metadata={"help": "attention heads (hidden_size must divide by it)"})
    intermediate_size: int = field(default=256, metadata={"help": "MLP width"})
    corpus_per_split: int = field(
        default=3000,
        metadata={"help": "pre-training problems per split (one-digit splits give what they have)"},
    )
    strategies_per_problem: int = field(
        default=2, metadata={"help": "distinct strategies rendered per problem"}
    )
    steps: int = field(
        default=16000, metadata={"help": "optimizer steps (32 seqs x 16000 = 512k seqs, ~25 epochs)"}
    )
    batch_size: int = field(default=32, metadata={"help": "sequences per step"})
    lr: float = field(
        default=3e-3, metadata={"help": "peak learning rate (linear warmup, cosine decay to 10%)"}
    )
    warmup_steps: int = field(default=50, metadata={"help": "linear warmup steps"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise UserError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        for name in (
            "hidden_size",
            "num_layers",
            "intermediate_size",
            "corpus_per_split",
            "steps",
            "batch_size",
        ):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")

    def hash(self) -> str:
        """Stable 12-hex-digit id of this config, the world and the training code."""
        key = json.dumps(
            {"cfg": asdict(self), "world": WORLD_VERSION, "code": BASE_MODEL_VERSION}, sort_keys=True
        )
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    @classmethod
    def tiny(cls, **overrides) -> BaseModelConfig:
        """A config for tests: trains in a few seconds and learns little beyond the format."""
        base = dict(
            hidden_size=32,
            num_layers=1,
            num_heads=2,
            intermediate_size=64,
            corpus_per_split=40,
            steps=30,
            batch_size=16,
            lr=1e-2,
            warmup_steps=5,
        )
        return cls(**{**base, **overrides})


def _sequences(tokenizer: PreTrainedTokenizerBase, examples: list[SumsExample]) -> list[list[int]]:
    """Token ids of each example as one full chat: prompt turn(s) and the assistant's solution."""
    chats = [
        build_messages(e.problem.question, system_prompt=DEMO_SYSTEM_PROMPT)
        + [{"role": "assistant", "content": e.response}]
        for e in examples
    ]
    texts = tokenizer.apply_chat_template(chats, tokenize=False)
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def _model(cfg: BaseModelConfig, tokenizer: PreTrainedTokenizerBase, max_len: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=max(256, max_len),
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(config)
    _set_generation_ids(model, tokenizer)
    return model


def _set_generation_ids(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase) -> None:
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None


def train_base_model(
    cfg: BaseModelConfig, *, tokenizer: PreTrainedTokenizerBase, progress: bool = True, device: str = "cpu"
) -> tuple[LlamaForCausalLM, dict]:
    """Pre-train a fresh model on the corpus of ``cfg`` on ``device``; returns the model (on the CPU)
    and a training log."""
    examples = build_pretrain_corpus(
        n_per_split=cfg.corpus_per_split, seed=cfg.seed, strategies_per_problem=cfg.strategies_per_problem
    )
    seqs = _sequences(tokenizer, examples)
    model = _model(cfg, tokenizer, max(len(s) for s in seqs)).to(device)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )

    def lr_factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress_frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * progress_frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    collate = SFTCollator(tokenizer.pad_token_id)
    gen = torch.Generator().manual_seed(cfg.seed)
    order: list[int] = []
    losses: list[float] = []
    model.train()
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="pre-train base model", disable=not progress, unit="step")
    for _ in bar:
        if len(order) < cfg.batch_size:  # a new epoch: reshuffle
            order += torch.randperm(len(seqs), generator=gen).tolist()
        idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
        rows = [{"input_ids": seqs[i], "labels": seqs[i]} for i in idx]  # loss on every token
        batch = {k: v.to(device) for k, v in collate(rows).items()}
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    model.cpu().eval()
    log = {
        "train_seconds": round(time.perf_counter() - start, 1),
        "corpus_sequences": len(seqs),
        "corpus_tokens": sum(len(s) for s in seqs),
        "epochs": round(cfg.steps * cfg.batch_size / len(seqs), 2),
        "parameters": sum(p.numel() for p in model.parameters()),
        "loss_first": losses[0],
        "loss_last10": sum(losses[-10:]) / len(losses[-10:]),
        "losses": [round(x, 4) for x in losses],
    }
    return model, log


def vocab_digest(tokenizer: PreTrainedTokenizerBase) -> str:
    """SHA-256 of the tokenizer's token -> id table: packaged weights are only valid for this vocabulary."""
    table = json.dumps(sorted(tokenizer.get_vocab().items()), separators=(",", ":"))
    return hashlib.sha256(table.encode()).hexdigest()[:16]


def export_base_model(model_dir: str | os.PathLike, path: str | os.PathLike = PACKAGED) -> Path:
    """Write the base model in ``model_dir`` (a :func:`build_base_model` folder) as one safetensors file:
    its float32 weights (the tied head once), and in the metadata its config hash, model config,
    vocabulary digest and training log."""
    from safetensors.torch import save_file

    from sedsft.models import load_local_model

    model_dir = Path(model_dir)
    info = read_json(model_dir / "base_config.json")
    model, tokenizer = load_local_model(model_dir, dtype="float32", device="cpu")
    tensors = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    log = {k: v for k, v in read_json(model_dir / "train_log.json").items() if k != "losses"}
    meta = {
        "hash": info["hash"],
        "base_config": json.dumps({k: v for k, v in info.items() if k not in ("hash", "source")}),
        "model_config": model.config.to_json_string(use_diff=False),
        "vocab": vocab_digest(tokenizer),
        "train_log": json.dumps(log),
    }
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def packaged_model(cfg: BaseModelConfig, tokenizer, path: str | os.PathLike = PACKAGED):
    """(model, training log) from the packaged file if it was made by ``cfg`` for ``tokenizer``, else None."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("hash") != cfg.hash() or meta.get("vocab") != vocab_digest(tokenizer):
        return None
    model = LlamaForCausalLM(LlamaConfig.from_dict(json.loads(meta["model_config"])))
    missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(
            f"{path} does not fit its own model config: missing {missing}, unexpected {unexpected}"
        )
    model.tie_weights()
    _set_generation_ids(model, tokenizer)
    return model.eval(), json.loads(meta["train_log"])


def build_base_model(
    cfg: BaseModelConfig,
    cache_dir: str | os.PathLike,
    *,
    rebuild: bool = False,
    progress: bool = True,
    device: str = "cpu",
    packaged: str | os.PathLike = PACKAGED,
) -> Path:
    """The folder of the base model for ``cfg``: cached, unpacked from ``packaged``, or trained (module
    doc); ``base_config.json`` in it records which (``source``)."""
    final = Path(cache_dir) / cfg.hash()
    if (final / "base_config.json").exists() and not rebuild:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    found = None if rebuild else packaged_model(cfg, tokenizer, packaged)
    if found is not None:
        (model, log), source = found, "package"
    else:
        (model, log), source = (
            train_base_model(cfg, tokenizer=tokenizer, progress=progress, device=device),
            "trained",
        )
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "train_log.json", log)
        atomic_write_json(tmp / "base_config.json", {"hash": cfg.hash(), "source": source, **asdict(cfg)})
        for f in [tmp, *tmp.iterdir()]:  # mkdtemp/mkstemp create owner-only files; share like save_pretrained
            f.chmod(0o755 if f.is_dir() else 0o644)
        if rebuild and final.exists():
            shutil.rmtree(final)  # --rebuild_base replaces the cached copy
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "base_config.json").exists():  # not a concurrent twin that finished first
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _main() -> None:
    """``python -m sedsft.demo.base_model [cache_dir]``: retrain the default model, rewrite the packaged file."""
    import sys

    torch.set_num_threads(os.cpu_count() or 1)
    cache = sys.argv[1] if len(sys.argv) > 1 else ".cache/demo-base"
    path = build_base_model(BaseModelConfig(), cache, rebuild=True)
    out = export_base_model(path)
    log = read_json(path / "train_log.json")
    print(f"trained {path} in {log['train_seconds']} s; wrote {out} ({out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    _main()
