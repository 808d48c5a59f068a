"""``sedsft calibrate``: tau for SED-SFT from a local model and data file, printed and saved as JSON.

    sedsft calibrate --model ./Qwen2.5-Math-7B --data data/train.jsonl --top_k 2 --mask_ratio 0.7

The sample is drawn exactly as ``sedsft sft`` draws it (same seed -> same examples, same tokenization),
so the printed tau is the one training would calibrate; pass it to ``sedsft sft --tau`` to skip that step.
"""

from __future__ import annotations

import argparse
import os

from sedsft.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line; the dispatcher prints it
        raise UserError(f"{message} (see sedsft calibrate --help)")


def _parser() -> argparse.ArgumentParser:
    from sedsft.calibrate import CALIBRATION_FILE, POSITIONS
    from sedsft.data import OVERFLOW
    from sedsft.prompts import DEFAULT_SYSTEM_PROMPT

    p = _Parser(prog="sedsft calibrate", description="tau = (1 - r)-quantile of P_topk on the initial model")
    p.add_argument("--model", required=True, help="local model folder (config.json, weights, tokenizer)")
    p.add_argument("--data", required=True, help="local .jsonl/.json/.parquet training file or folder")
    p.add_argument("--top_k", type=int, default=2, help="k of P_topk (default 2, the paper's)")
    p.add_argument("--mask_ratio", type=float, default=0.7, help="r, fraction of positions left unpenalised")
    p.add_argument("--positions", choices=POSITIONS, default="labels", help="which positions are scored")
    p.add_argument("--num_examples", type=int, default=1000, help="examples sampled from the data")
    p.add_argument("--seed", type=int, default=42, help="sampling seed (sedsft sft's --seed)")
    p.add_argument("--max_tokens", type=int, default=None, help="cap on scored positions")
    p.add_argument("--max_length", type=int, default=1024, help="as sedsft sft's --max_length")
    p.add_argument("--overflow", choices=OVERFLOW, default="truncate", help="as sedsft sft's --overflow")
    p.add_argument("--system_prompt", default=DEFAULT_SYSTEM_PROMPT, help="as sedsft sft's --system_prompt")
    p.add_argument("--batch_size", type=int, default=8, help="sequences per forward pass")
    p.add_argument("--dtype", choices=["auto", "bfloat16", "float16", "float32"], default="auto")
    p.add_argument("--trust_remote_code", action="store_true", help="allow the model folder's own code")
    p.add_argument(
        "--output", default=CALIBRATION_FILE, help=f"where to write the JSON (default ./{CALIBRATION_FILE})"
    )
    return p


def main(argv: list[str]) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    a = _parser().parse_args(argv)
    if a.num_examples < 1 or a.batch_size < 1:
        raise UserError("--num_examples and --batch_size must be >= 1")
    from sedsft.calibrate import CalibrationSpec, calibrate_records
    from sedsft.data import load_records
    from sedsft.models import check_local_model, load_local_model

    spec = CalibrationSpec.from_preset(
        top_k=a.top_k,
        mask_ratio=a.mask_ratio,
        seed=a.seed,
        examples=a.num_examples,
        positions=a.positions,
        batch_size=a.batch_size,
        max_tokens=a.max_tokens,
    )
    records = load_records(a.data)
    path = check_local_model(a.model)  # before the data is tokenized: a wrong path fails at once
    model, tok = load_local_model(path, dtype=a.dtype, trust_remote_code=a.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    cal = calibrate_records(
        model,
        tok,
        records,
        spec,
        system_prompt=a.system_prompt or None,
        max_length=a.max_length,
        overflow=a.overflow,
        source={"dataset": a.data, "model": path},
    )
    cal.save(a.output)
    print(
        f"tau = {cal.tau:.6f}  (top_k={spec.top_k}, r={spec.mask_ratio}, {cal.num_positions} positions from "
        f"{cal.num_sequences} of {len(records)} records; written to {a.output})"
    )
    return 0
