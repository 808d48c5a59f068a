"""One tiny training run, used in-process by the tests and under ``torchrun`` for the two-process check.

``python -m tests.train.worker OUT MODEL DATA PER_DEVICE ACCUM STEPS OBJECTIVE`` writes ``OUT/rank<r>.json``
(tau, the logged losses) on every rank and ``OUT/params.pt`` on rank 0.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from sedsft.data import build_sft_dataset, load_records
from sedsft.train import SEDSFTConfig, SEDSFTTrainer


def train(
    out: Path,
    model_dir: Path,
    data: Path,
    *,
    per_device: int,
    accum: int,
    steps: int,
    objective: str,
    loss_impl: str = "auto",
    **overrides,
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    ds, _ = build_sft_dataset(load_records(data), tok, max_length=128)
    settings = dict(
        output_dir=str(out),
        objective=objective,
        loss_impl=loss_impl,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accum,
        max_steps=steps,
        optim="sgd",
        learning_rate=0.5,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        calibration_examples=8,
        calibration_batch_size=2,  # 4 calibration batches: two processes score two each
        per_device_eval_batch_size=4,
        max_grad_norm=0.0,
        seed=0,
        bf16=False,  # TRL defaults to bf16 autocast, also on CPU; the comparisons here are fp32
    )
    args = SEDSFTConfig(**{**settings, **overrides})
    trainer = SEDSFTTrainer(model, args=args, train_dataset=ds, processing_class=tok)
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    return trainer


def main(argv: list[str]) -> None:
    out, model_dir, data = Path(argv[0]), Path(argv[1]), Path(argv[2])
    per_device, accum, steps, objective = int(argv[3]), int(argv[4]), int(argv[5]), argv[6]
    trainer = train(
        out, model_dir, data, per_device=per_device, accum=accum, steps=steps, objective=objective
    )
    rank = trainer.accelerator.process_index
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    record = {"rank": rank, "world": trainer.accelerator.num_processes, "tau": trainer.tau, "losses": losses}
    (out / f"rank{rank}.json").write_text(json.dumps(record))
    if rank == 0:
        torch.save({k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}, out / "params.pt")


if __name__ == "__main__":
    main(sys.argv[1:])
