"""Grade a file of existing responses (``sedsft eval --responses``): read it strictly, grade, score, write.

One record per line (JSONL; JSON and Parquet files of records work too) with ``response`` (the
model's text) and ``gold`` (or ``answer``); optional ``benchmark`` (default ``responses``),
``problem_id`` (or ``id``; default the record's position) and ``sample_index``. Records with the
same ``(benchmark, problem_id)`` are the samples of one problem. A record that cannot be read is an
error naming its file and line; no record is ever left out.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean

from sedsft.errors import UserError
from sedsft.eval.benchmarks import normalize_gold
from sedsft.eval.grader_pool import open_grader
from sedsft.eval.metrics import benchmark_metrics
from sedsft.eval.runner import EvalResult, markdown_table
from sedsft.io import atomic_write_json, atomic_write_text


def read_responses(path: str | Path) -> dict[str, list[dict]]:
    """Records of a responses file, grouped by benchmark, with problem_id and sample_index filled in."""
    from sedsft.data import load_records

    path = Path(path)
    if not path.is_file():
        raise UserError(f"--responses {path} not found; pass a .jsonl file of response/gold records")
    by_bench: dict[str, list[dict]] = {}
    seen: set[tuple[str, str, int]] = set()
    counts: dict[tuple[str, str], int] = {}
    for i, r in enumerate(load_records(path)):
        where = r.pop("_source", f"{path.name}:{i + 1}")
        gold = normalize_gold(r.get("gold", r.get("answer")))
        if not isinstance(r.get("response"), str) or gold is None:
            raise UserError(
                f"{where}: needs a 'response' string and a non-empty 'gold' (or 'answer'); fix or remove the record"
            )
        bench = str(r.get("benchmark", "responses"))
        pid = str(r.get("problem_id", r.get("id", i)))
        idx = r.get("sample_index", counts.get((bench, pid), 0))
        if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
            raise UserError(f"{where}: 'sample_index' must be an integer >= 0, got {idx!r}")
        if (bench, pid, idx) in seen:
            raise UserError(
                f"{where}: sample {idx} of problem {bench}/{pid} appears twice; give each its own"
            )
        seen.add((bench, pid, idx))
        counts[(bench, pid)] = max(counts.get((bench, pid), 0), idx + 1)
        by_bench.setdefault(bench, []).append(
            {**r, "benchmark": bench, "problem_id": pid, "sample_index": idx, "gold": gold}
        )
    return by_bench


def grade_responses(
    by_bench: dict[str, list[dict]],
    *,
    workers: int = 2,
    timeout_s: float = 2.0,
    protocol: str = "sedsft",
    output_dir: str | Path | None = None,
    run_name: str = "responses",
) -> EvalResult:
    """Grade the records :func:`read_responses` gave; with ``output_dir`` write graded.jsonl,
    metrics.json and results.md there (atomically)."""
    flat = [r for rs in by_bench.values() for r in rs]
    with open_grader(workers=workers, timeout_s=timeout_s, protocol=protocol) as grader:
        grades = grader.grade([(r["response"], r["gold"]) for r in flat])
    for r, g in zip(flat, grades, strict=True):
        r.update(
            extracted_answer=g.extracted,
            correct=g.correct,
            grading_timed_out=g.timed_out,
            grading_error=g.error,
        )
    metrics = {b: benchmark_metrics(b, rs) for b, rs in by_bench.items()}
    average = fmean(m.accuracy for m in metrics.values())
    markdown = markdown_table(metrics, run_name=run_name)
    out = Path(output_dir) if output_dir is not None else None
    result = EvalResult(metrics, average, flat, markdown, out)
    if out is not None:
        atomic_write_text(
            out / "graded.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in flat)
        )
        atomic_write_json(out / "metrics.json", {"run_name": run_name, **result.to_dict()})
        atomic_write_text(out / "results.md", markdown)
    return result
