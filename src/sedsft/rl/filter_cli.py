"""``sedsft filter``: keep the RL prompts a model sometimes, but not always, solves.

    sedsft filter --model out/sft-sed --data prompts.parquet --n 8 --output_dir out/filter

Writes to ``--output_dir``: ``solve_rates.jsonl`` (one line per sampled prompt: index, solve rate,
per-sample correctness and extracted answers; the resume log), ``kept.<ext>`` (the kept records in
the input's own layout and format, or ``kept.parquet`` in verl's layout with ``--output_format verl``)
and ``summary.json``. Rerunning the same command samples only prompts not yet in the log.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from sedsft.errors import UserError
from sedsft.io import atomic_write_json, atomic_write_text
from sedsft.prompts import DEFAULT_SYSTEM_PROMPT


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line through sedsft's dispatcher instead of usage + exit
        raise UserError(f"{message}; see sedsft filter --help")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sedsft filter", description=__doc__.split("\n")[0])
    p.add_argument(
        "--model", required=True, help="local checkpoint folder (model + tokenizer with a chat template)"
    )
    p.add_argument("--data", required=True, help="prompt file or folder (verl, question/answer, ... layouts)")
    p.add_argument("--output_dir", required=True, help="where solve_rates.jsonl, kept.*, summary.json go")
    p.add_argument("--n", type=int, default=8, help="samples per prompt (paper: 8)")
    p.add_argument(
        "--temperature", type=float, default=1.0, help="sampling temperature (default 1.0, as GRPO)"
    )
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--max_new_tokens", type=int, default=3072, help="token budget per sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_prompts", type=int, default=64, help="prompts per generate call")
    p.add_argument("--limit", type=int, help="only the first LIMIT records")
    p.add_argument(
        "--system_prompt", default=DEFAULT_SYSTEM_PROMPT, help="system turn for prompts without one"
    )
    p.add_argument("--no_system_prompt", action="store_true", help="add no system turn")
    p.add_argument(
        "--output_format",
        default="same",
        choices=("same", "verl"),
        help="kept prompts: input layout or verl's",
    )
    p.add_argument(
        "--data_source", default="sedsft_math", help="data_source column with --output_format verl"
    )
    p.add_argument("--backend", default="auto", choices=("auto", "hf", "vllm"), help="auto: vLLM when usable")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", help="hf backend device (default: cuda when available)")
    p.add_argument("--batch_size", type=int, default=8, help="hf backend: sequences per generate batch")
    p.add_argument("--trust_remote_code", action="store_true", help="run the checkpoint's own Python code")
    p.add_argument("--tensor_parallel_size", type=int, default=1, help="vllm backend GPUs")
    p.add_argument("--grading_workers", type=int, default=2, help="grading processes (0: in this process)")
    p.add_argument(
        "--grading_timeout", type=float, default=2.0, help="seconds per response before it counts wrong"
    )
    p.add_argument("--save_responses", action="store_true", help="keep the sampled responses in the log")
    p.add_argument("--no_progress", action="store_true")
    return p


def load_backend(args):
    """The generation backend named by ``--backend`` for ``--model``."""
    from sedsft.eval.generation import backend_from_args

    return backend_from_args(args)  # checks that --model is a local checkpoint folder


def write_same_layout(records: list[dict], data_path: Path, out_dir: Path) -> Path:
    """The records (without sedsft's ``_source`` tag) in the input's format: kept.jsonl/.json/.parquet."""
    rows = [{k: v for k, v in r.items() if k != "_source"} for r in records]
    suffix = data_path.suffix if data_path.is_file() else ".jsonl"
    path = out_dir / f"kept{suffix}"
    if suffix == ".parquet":
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        from sedsft.io import atomic_write_bytes

        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), buffer)
        return atomic_write_bytes(path, buffer.getvalue())
    if suffix == ".json":
        return atomic_write_text(path, json.dumps(rows, ensure_ascii=False, indent=1) + "\n")
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def main(argv: list[str]) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}")
    from sedsft.data import load_records
    from sedsft.eval.grader_pool import GraderPool
    from sedsft.rl.filter import FilterConfig, filter_prompts
    from sedsft.rl.prompts import rl_prompts_from_records
    from sedsft.rl.verl import to_verl_rows, write_verl_parquet

    config = FilterConfig(
        n=args.n,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        batch_prompts=args.batch_prompts,
        save_responses=args.save_responses,
    )
    data_path, out_dir = Path(args.data), Path(args.output_dir)
    records = load_records(data_path)[: args.limit]
    system_prompt = None if args.no_system_prompt else (args.system_prompt or None)
    prompts = rl_prompts_from_records(records, system_prompt=system_prompt, source=str(data_path))
    backend = load_backend(args)
    log_path = out_dir / "solve_rates.jsonl"
    if args.grading_workers > 0:
        with GraderPool(workers=args.grading_workers, timeout_s=args.grading_timeout) as pool:
            result = filter_prompts(
                prompts, backend, config=config, pool=pool, log_path=log_path, progress=not args.no_progress
            )
    else:
        result = filter_prompts(
            prompts, backend, config=config, log_path=log_path, progress=not args.no_progress
        )

    if not result.kept:
        kept_path = None
    elif args.output_format == "verl":
        rows = to_verl_rows([prompts[i] for i in result.kept], split="train", data_source=args.data_source)
        kept_path = write_verl_parquet(rows, out_dir / "kept.parquet")
    else:
        kept_path = write_same_layout([records[i] for i in result.kept], data_path, out_dir)
    summary = {
        **result.summary(),
        "n": args.n,
        "model": args.model,
        "data": str(data_path),
        "kept_file": kept_path,
    }
    atomic_write_json(out_dir / "summary.json", summary)
    print(
        f"sedsft filter: kept {len(result.kept)} of {len(prompts)} prompts "
        f"({summary['always_solved']} always solved, {summary['never_solved']} never solved, "
        f"{summary['no_gold']} without gold) -> {kept_path or 'nothing to write'}"
    )
    return 0
