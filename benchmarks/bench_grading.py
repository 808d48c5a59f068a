"""Grading throughput (responses/s) over the reference solutions of the 8 benchmarks.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_grading.py [--data_dir ../shared/data/benchmarks]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_grading.py --limit 20 --out /tmp/smoke.csv  # smoke run

Where a benchmark publishes worked solutions (aime24, gsm8k, math) those are graded against the
gold; elsewhere the response is "... The answer is \\boxed{<gold>}." Mode own_gold grades them against
their gold (mostly the exact-string fast path); shuffled_gold against another row's gold (mostly
SymPy, the slow path: what wrong model answers cost). Each benchmark is timed in this
process (workers=0, the library default; caches cleared before each timing) and through a
GraderPool (workers=2, the CLI default; worker start-up is not timed; workers keep their caches
between modes, so their shuffled_gold rows start with warm gold caches). Appends long-format rows
to benchmarks/results/grading.csv.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import itertools
import os
import platform
import random
import subprocess
import time
from importlib.metadata import version
from pathlib import Path

from sedsft.eval.benchmarks import BENCHMARKS, load
from sedsft.eval.grader_pool import GraderPool, grade_one
from sedsft.eval.grading import clear_caches

ROOT = Path(__file__).resolve().parents[1]
FIELDS = [
    "machine",
    "benchmark",
    "mode",
    "n",
    "seconds",
    "responses_per_s",
    "correct_frac",
    "workers",
    "versions",
    "commit",
    "timestamp",
]


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} x{len(os.sched_getaffinity(0))}"


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return ""


def _tasks(name: str, data_dir: Path, limit: int | None) -> list[tuple[str, str]]:
    problems = load(name, data_dir, limit=limit)
    return [
        (p.reference or f"Working omitted. The answer is \\boxed{{{p.answer}}}.", p.answer) for p in problems
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data_dir", default=str(ROOT / ".." / "shared" / "data" / "benchmarks"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "grading.csv"))
    ap.add_argument("--pool_workers", type=int, default=2)
    ap.add_argument(
        "--limit", type=int, help="first LIMIT problems per benchmark (a smoke run, not a result)"
    )
    args = ap.parse_args()

    versions = ";".join(
        f"{p}={version(p)}" for p in ("sedsft", "math-verify", "sympy", "latex2sympy2_extended")
    )
    versions += f";python={platform.python_version()}"
    common = {"machine": _machine(), "versions": versions, "commit": _commit()}
    rows = []
    pool = GraderPool(workers=args.pool_workers, timeout_s=2.0)
    try:
        for name in BENCHMARKS:
            own = _tasks(name, Path(args.data_dir), args.limit)
            golds = [g for _, g in own]
            random.Random(0).shuffle(golds)
            for mode, workers in itertools.product(("own_gold", "shuffled_gold"), (0, args.pool_workers)):
                tasks = own if mode == "own_gold" else [(r, g) for (r, _), g in zip(own, golds)]
                clear_caches()  # no answer parsed or normalised before the clock starts
                start = time.perf_counter()
                grades = pool.grade(tasks) if workers else [grade_one(*t) for t in tasks]
                seconds = time.perf_counter() - start
                row = {
                    **common,
                    "benchmark": name,
                    "mode": mode,
                    "n": len(tasks),
                    "seconds": round(seconds, 3),
                    "responses_per_s": round(len(tasks) / seconds, 1),
                    "correct_frac": round(sum(g.correct for g in grades) / len(grades), 4),
                    "workers": workers,
                    "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                }
                rows.append(row)
                print(
                    f"{name:14s} {mode:13s} workers={workers} n={row['n']:5d} {row['seconds']:7.2f}s {row['responses_per_s']:8.1f}/s correct={row['correct_frac']}"
                )
    finally:
        pool.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    new = not out.exists()
    with open(out, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)
    print(f"appended {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()
