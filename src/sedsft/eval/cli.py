"""`sedsft eval`: the paper's evaluation of a local checkpoint, or grading of existing responses.

    sedsft eval --model PATH --benchmarks all --data_dir ../shared/data/benchmarks --output_dir runs/eval
    sedsft eval --responses responses.jsonl [--output_dir runs/graded]

Rerunning the first command resumes an interrupted run and does nothing for a finished one.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from sedsft.errors import UserError
from sedsft.io import atomic_write_json, atomic_write_text, read_json, read_jsonl_records
from sedsft.prompts import DEFAULT_SYSTEM_PROMPT


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line through sedsft's dispatcher instead of usage + exit
        raise UserError(f"{message}; see sedsft eval --help")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sedsft eval", description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="local checkpoint folder (model + tokenizer with a chat template)")
    src.add_argument(
        "--responses",
        help="JSONL of existing responses to grade: fields response, gold (or answer), "
        "optional benchmark, problem_id (or id), sample_index",
    )
    p.add_argument("--benchmarks", default="all", help="'all' or comma-separated names (default: all)")
    p.add_argument(
        "--data_dir", default="../shared/data/benchmarks", help="folder with <benchmark>/test.jsonl"
    )
    p.add_argument(
        "--output_dir", help="where samples.jsonl, metrics.json, results.md go (required with --model)"
    )
    p.add_argument(
        "--protocol", default="paper", help="paper (default: Avg@8 T=0.7 / 1 sample T=1.0) or greedy"
    )
    p.add_argument("--n", type=int, help="override: samples per problem on every benchmark")
    p.add_argument("--temperature", type=float, help="override: temperature on every benchmark")
    p.add_argument("--top_p", type=float, help="override: nucleus mass on every benchmark")
    p.add_argument("--max_new_tokens", type=int, help="override: token budget per sample (protocol: 4096)")
    p.add_argument("--limit", type=int, help="evaluate only the first LIMIT problems of each benchmark")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--system_prompt", default=DEFAULT_SYSTEM_PROMPT, help="system turn (default: the paper's)"
    )
    p.add_argument("--no_system_prompt", action="store_true", help="no system turn at all")
    p.add_argument(
        "--backend", default="auto", choices=("auto", "hf", "vllm"), help="auto: vLLM when installed"
    )
    p.add_argument("--batch_size", type=int, default=8, help="problems per generate call")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", help="hf backend device (default: cuda when available)")
    p.add_argument("--trust_remote_code", action="store_true", help="run the checkpoint's own Python code")
    p.add_argument("--tensor_parallel_size", type=int, default=1, help="vllm backend GPUs")
    p.add_argument("--grading_workers", type=int, default=2, help="grading processes (0: in this process)")
    p.add_argument(
        "--grading_timeout", type=float, default=2.0, help="seconds per response before it counts wrong"
    )
    p.add_argument("--run_name", help="row label in the tables (default: the model folder name)")
    p.add_argument("--no_progress", action="store_true")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}")
    if args.responses:
        return _grade_responses(args)
    return _evaluate_model(args)


def _evaluate_model(args) -> int:
    from sedsft.eval.benchmarks import load, parse_names
    from sedsft.eval.generation import backend_from_args
    from sedsft.eval.protocol import resolve_sampling
    from sedsft.models import check_local_model

    model = Path(check_local_model(args.model))  # before any output is written
    if not args.output_dir:
        raise UserError("--output_dir is required with --model (samples are saved there as they are made)")
    names = parse_names(args.benchmarks)
    problems = {n: load(n, args.data_dir, limit=args.limit) for n in names}
    sampling = resolve_sampling(
        names,
        protocol=args.protocol,
        n=args.n,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )
    out = Path(args.output_dir)
    request = {k: v for k, v in vars(args).items() if k not in ("no_progress", "grading_workers")}
    request["model"] = str(model.resolve())
    finished = out / "finished.json"
    if finished.exists() and read_json(finished) == request and (out / "results.md").exists():
        print(f"{out}: this run is already finished; delete {finished} to redo it\n")
        print((out / "results.md").read_text(encoding="utf-8"))
        return 0

    from sedsft.eval.runner import evaluate

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = evaluate(
        backend_from_args(args),
        problems,
        sampling=sampling,
        system_prompt=None if args.no_system_prompt else args.system_prompt,
        output_dir=out,
        batch_size=args.batch_size,
        grading_workers=args.grading_workers,
        grading_timeout_s=args.grading_timeout,
        run_name=args.run_name or model.resolve().name,
        progress=not args.no_progress,
    )
    atomic_write_json(finished, request)
    print(result.markdown)
    print(f"samples, metrics.json and results.md are in {out}")
    return 0


def read_responses(path: str | Path) -> dict[str, list[dict]]:
    """Records of a responses file, grouped by benchmark, with problem_id and sample_index filled in."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--responses {path} not found")
    by_bench: dict[str, list[dict]] = {}
    counts: dict[tuple[str, str], int] = {}
    for i, r in enumerate(read_jsonl_records(path)):
        gold = r.get("gold", r.get("answer"))
        if not isinstance(r.get("response"), str) or gold is None:
            raise UserError(
                f"{path} record {i + 1}: needs a 'response' string and a 'gold' (or 'answer') field"
            )
        bench = str(r.get("benchmark", "responses"))
        pid = str(r.get("problem_id", r.get("id", i)))
        idx = int(r.get("sample_index", counts.get((bench, pid), 0)))
        counts[(bench, pid)] = idx + 1
        by_bench.setdefault(bench, []).append(
            {**r, "benchmark": bench, "problem_id": pid, "sample_index": idx, "gold": str(gold)}
        )
    if not by_bench:
        raise UserError(f"--responses {path} has no records")
    return by_bench


def _grade_responses(args) -> int:
    from statistics import fmean

    from sedsft.eval.grader_pool import GraderPool, grade_one
    from sedsft.eval.metrics import benchmark_metrics
    from sedsft.eval.runner import markdown_table

    by_bench = read_responses(args.responses)
    flat = [r for rs in by_bench.values() for r in rs]
    tasks = [(r["response"], r["gold"]) for r in flat]
    if args.grading_workers > 0:
        with GraderPool(workers=args.grading_workers, timeout_s=args.grading_timeout) as pool:
            grades = pool.grade(tasks)
    else:
        grades = [grade_one(*t) for t in tasks]
    for r, g in zip(flat, grades):
        r.update(extracted_answer=g.extracted, correct=g.correct, grading_timed_out=g.timed_out)
    metrics = {b: benchmark_metrics(b, rs) for b, rs in by_bench.items()}
    run_name = args.run_name or Path(args.responses).stem
    markdown = markdown_table(metrics, run_name=run_name)
    if args.output_dir:
        out = Path(args.output_dir)
        atomic_write_text(
            out / "graded.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in flat)
        )
        average = fmean(m.accuracy for m in metrics.values())
        atomic_write_json(
            out / "metrics.json",
            {
                "run_name": run_name,
                "average": average,
                "benchmarks": {b: m.to_dict() for b, m in metrics.items()},
            },
        )
        atomic_write_text(out / "results.md", markdown)
    print(markdown)
    return 0
