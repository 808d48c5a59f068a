"""Peak GPU memory and losses of SEDSFTTrainer under ZeRO-3 and FSDP2: the fused head against the logits path.

One run = one ``accelerate launch`` of this file with a config from ``configs/accelerate`` (all visible
GPUs). Each process trains a random Qwen2-shaped model (151,936-token vocabulary, so the head and the
logits dominate) for a few steps on random token sequences of ``--seq_len`` tokens, then appends one row
per run to ``benchmarks/results/sharded_head.csv``: the config, loss_impl, world size, the peak of
``torch.cuda.max_memory_allocated`` over ranks, and the logged losses (the fused and logits rows of a
config must agree to bf16 precision). Run every combination with:

    bash benchmarks/sharded_head_gpu.sh          # ZeRO-3 and FSDP2, fused and logits, 8k tokens per GPU

CPU-only machines cannot run it (accelerate starts FSDP and DeepSpeed on GPUs only); the CPU tests of the
same code paths are tests/train/test_sharded.py.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import tempfile
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "sharded_head.csv"


def _model_dir(root: Path, args) -> Path:
    """A random Qwen2-shaped checkpoint and a tokenizer (built once, by the main process)."""
    from tests.tiny import char_tokenizer
    from transformers import Qwen2Config, Qwen2ForCausalLM

    path = root / "model"
    if int(os.environ.get("RANK", "0")) == 0 and not (path / "config.json").exists():
        tok = char_tokenizer()
        cfg = Qwen2Config(
            vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=4 * args.hidden, num_hidden_layers=args.layers,
            num_attention_heads=args.hidden // 128, num_key_value_heads=2, max_position_embeddings=32768,
            tie_word_embeddings=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        )  # fmt: skip
        torch.manual_seed(0)
        Qwen2ForCausalLM(cfg).to(torch.bfloat16).save_pretrained(path)
        tok.save_pretrained(path)
    return path


def main() -> None:
    from accelerate import PartialState
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sedsft.train import SEDSFTConfig, SEDSFTTrainer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config_name", required=True, help="the accelerate config used (recorded in the row)")
    p.add_argument("--loss_impl", choices=["fused", "logits"], required=True)
    p.add_argument("--seq_len", type=int, default=8192)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--hidden", type=int, default=1536)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "sedsft_sharded_head"))
    p.add_argument("--output", default=str(RESULTS), help="the CSV the row is appended to")
    args = p.parse_args()

    state = PartialState()
    root = Path(args.workdir)
    model_dir = _model_dir(root, args)
    state.wait_for_everyone()
    tok = AutoTokenizer.from_pretrained(model_dir)
    g = torch.Generator().manual_seed(1)
    rows = 2 * state.num_processes * args.steps
    ids = torch.randint(10, args.vocab, (rows, args.seq_len), generator=g)  # [rows, T]
    labels = ids.clone()
    labels[:, : args.seq_len // 4] = -100  # a prompt quarter, as SFT data has
    data = Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()})
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, attn_implementation="sdpa")
    config = SEDSFTConfig(
        output_dir=str(root / f"run_{args.config_name}_{args.loss_impl}"), objective="sed", tau=0.5,
        loss_impl=args.loss_impl, per_device_train_batch_size=1, gradient_accumulation_steps=2, max_steps=args.steps,
        learning_rate=1e-5, logging_steps=1, save_strategy="no", report_to="none", bf16=torch.cuda.is_available(),
        activation_checkpointing=True, max_length=None, seed=0, disable_tqdm=True,
    )  # fmt: skip
    trainer = SEDSFTTrainer(model, args=config, train_dataset=data, processing_class=tok)
    cuda = torch.cuda.is_available()  # a CPU run (single process) only checks that the script works
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    peak = torch.tensor(
        torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"), device=state.device
    )
    peak = trainer.accelerator.reduce(peak, reduction="max").item()
    if state.is_main_process:
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        row = {
            "time": dt.datetime.now().isoformat(timespec="seconds"), "gpu": torch.cuda.get_device_name() if cuda else "cpu",
            "config": args.config_name, "loss_impl": trainer.loss_impl, "world": state.num_processes,
            "seq_len": args.seq_len, "hidden": args.hidden, "layers": args.layers, "vocab": args.vocab,
            "peak_gib_max_rank": round(peak, 3), "losses": json.dumps(losses),
        }  # fmt: skip
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        new = not out.exists()
        with open(out, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
        print(row)


if __name__ == "__main__":
    main()
