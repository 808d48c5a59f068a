"""``sedsft analyze``: the paper's analysis tools on a model and a data file.

    sedsft analyze topk --model PATH --data train.jsonl [--num_examples 100] [--max_k 10] [--output_dir DIR]
    sedsft analyze heatmap --model PATH --data train.jsonl --index 3 [--tau 0.8 | --mask_ratio 0.7]
    sedsft analyze heatmap --model PATH --question "..." --response "..." --tau 0.8

Bad input (a missing file, an index out of range) is reported as one line and exit status 2, before
the model is loaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sedsft.calibrate import DEFAULT_SEED
from sedsft.errors import UserError
from sedsft.prompts import DEFAULT_SYSTEM_PROMPT

from .inputs import MAX_LENGTH


class _Parser(argparse.ArgumentParser):
    """argparse that raises UserError (one line from the dispatcher) instead of printing usage and exiting."""

    def error(self, message):
        raise UserError(f"{message} (see `sedsft analyze {self.prog.split()[-1]} --help`)")


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"expected comma-separated numbers such as 0.5,0.7,0.9, got {text!r}") from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model folder (or hub id when the hub is reachable)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder when it is not saved with the model")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--system_prompt", default=DEFAULT_SYSTEM_PROMPT, help="system prompt, as SFT renders it")
    p.add_argument(
        "--no_system_prompt", action="store_true", help="render conversations without a system turn"
    )
    p.add_argument(
        "--max_length", type=int, default=MAX_LENGTH, help="truncate tokenized examples (default: sft's 1024)"
    )
    p.add_argument("--batch_size", type=int, default=8, help="sequences per forward pass")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the data sample (sft's --seed)")
    p.add_argument("--num_examples", type=int, default=100, help="records sampled from --data (all if fewer)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sedsft analyze", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="tool", required=True, parser_class=_Parser)

    t = sub.add_parser("topk", help="cumulative top-k probability per position, k = 1..max_k (Figure 3)")
    _common(t)
    t.add_argument("--data", required=True, help="JSONL/JSON/Parquet file or folder of SFT records")
    t.add_argument("--max_k", type=int, default=10)
    t.add_argument(
        "--mask_ratios",
        type=_floats,
        default=[0.5, 0.6, 0.7, 0.8, 0.9],
        help="masking ratios r for the tau table (comma-separated)",
    )
    t.add_argument("--max_tokens", type=int, default=None, help="stop after this many scored positions")
    t.add_argument("--output_dir", default="analysis/topk")

    h = sub.add_parser("heatmap", help="per-token gold probability over one example (Figure 2), PNG + HTML")
    _common(h)
    h.add_argument(
        "--data", default=None, help="data file; --index picks the example, and tau is calibrated on it"
    )
    h.add_argument("--index", type=int, default=None, help="record index in --data (0-based)")
    h.add_argument("--question", default=None, help="the question, instead of --data/--index")
    h.add_argument("--response", default=None, help="the response to score, with --question")
    h.add_argument("--top_k", type=int, default=2, help="k of P_topk")
    h.add_argument("--tau", type=float, default=None, help="SED's threshold; default: calibrated on --data")
    h.add_argument("--mask_ratio", type=float, default=0.7, help="r used to calibrate tau on --data")
    h.add_argument("--num_alternatives", type=int, default=5, help="top alternatives shown per token")
    h.add_argument("--output_dir", default="analysis/heatmap")
    return parser


def _system_prompt(args) -> str | None:
    return None if args.no_system_prompt else args.system_prompt


def _check_positive(args, *names) -> None:
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UserError(f"--{name} must be >= 1, got {value}")


def run_topk(args) -> int:
    from .inputs import load_model_and_tokenizer, read_records
    from .topk import analyze_topk

    _check_positive(args, "max_k", "batch_size", "num_examples", "max_tokens")
    records = read_records(args.data)
    model, tokenizer = load_model_and_tokenizer(
        args.model, tokenizer_path=args.tokenizer, device=args.device, dtype=args.dtype
    )
    report = analyze_topk(
        model,
        tokenizer,
        records,
        max_k=args.max_k,
        mask_ratios=args.mask_ratios,
        num_examples=args.num_examples,
        seed=args.seed,
        batch_size=args.batch_size,
        system_prompt=_system_prompt(args),
        max_length=args.max_length,
        max_tokens=args.max_tokens,
        output_dir=args.output_dir,
        meta={"model": args.model, "data": str(args.data), "records": len(records)},
    )
    dist = report.distribution
    print(f"scored {dist.num_positions:,} label positions of {dist.num_sequences} sequences from {args.data}")
    print("k  median P_topk  " + "  ".join(f"tau(r={r:g})" for r in args.mask_ratios))
    for row in report.summary:
        k = row["k"]
        taus = "  ".join(f"{dist.tau(top_k=k, mask_ratio=r):10.4f}" for r in args.mask_ratios)
        print(f"{k:<2} {row['q50']:13.4f}  {taus}")
    print(f"wrote {', '.join(p.name for p in report.files.values())} to {args.output_dir}")
    return 0


def run_heatmap(args) -> int:
    from sedsft.calibrate import CalibrationSpec, calibrate_records

    from .heatmap import analyze_heatmap
    from .inputs import load_model_and_tokenizer, read_records

    _check_positive(args, "top_k", "batch_size", "num_examples")
    if (args.question is None) != (args.response is None):
        raise UserError("give both --question and --response, or use --data with --index")
    records = read_records(args.data) if args.data is not None else None
    if args.question is not None:
        record, name = {"question": args.question, "response": args.response}, "heatmap_text"
    elif records is None or args.index is None:
        raise UserError("choose the example: --data FILE --index I, or --question TEXT --response TEXT")
    elif not 0 <= args.index < len(records):
        raise UserError(
            f"--index {args.index} is out of range: {args.data} has {len(records)} records (0..{len(records) - 1})"
        )
    else:
        record, name = records[args.index], f"heatmap_{args.index}"
    if args.tau is None and not 0.0 <= args.mask_ratio <= 1.0:
        raise UserError(f"--mask_ratio must be in [0, 1], got {args.mask_ratio}")
    model, tokenizer = load_model_and_tokenizer(
        args.model, tokenizer_path=args.tokenizer, device=args.device, dtype=args.dtype
    )
    tau, how = args.tau, "given"
    if tau is None and records is not None:
        spec = CalibrationSpec.from_preset(
            top_k=args.top_k,
            mask_ratio=args.mask_ratio,
            seed=args.seed,
            examples=args.num_examples,
            batch_size=args.batch_size,
        )
        cal = calibrate_records(
            model, tokenizer, records, spec, system_prompt=_system_prompt(args), max_length=args.max_length
        )
        tau = cal.tau
        how = f"calibrated on {cal.num_sequences} records of {args.data} with r = {args.mask_ratio:g}"
    where = (
        f"example {args.index} of {Path(args.data).name}" if name != "heatmap_text" else "the given response"
    )
    hm = analyze_heatmap(
        model,
        tokenizer,
        record,
        top_k=args.top_k,
        tau=tau,
        num_alternatives=args.num_alternatives,
        system_prompt=_system_prompt(args),
        max_length=args.max_length,
        output_dir=args.output_dir,
        name=name,
        title=f"Gold-token probability over {where}",
    )
    if tau is None:
        print("no tau: pass --tau, or --data to calibrate one; SED's decision is left out")
    else:
        n = sum(t.penalized for t in hm.tokens)
        print(f"tau = {tau:.6f} ({how}); SED penalty active at {n} of {len(hm.tokens)} response tokens")
    print(f"wrote {', '.join(p.name for p in hm.files.values())} to {args.output_dir}")
    return 0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return run_topk(args) if args.tool == "topk" else run_heatmap(args)
