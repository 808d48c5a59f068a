"""One evaluation run: prompts -> samples -> grades -> metrics, resumable from its per-sample log.

``evaluate`` works on any problem lists (the 8 benchmarks, or the demo's own). With an
``output_dir`` it writes, as it goes:
- ``samples.jsonl``: one record per sample (benchmark, problem_id, sample_index, prompt_hash,
  response, extracted_answer, correct, ...), appended and fsynced after every batch;
- ``sedsft_run.json``: the run manifest (:mod:`sedsft.runs`); a restart with other settings is refused;
- ``metrics.json`` (atomic) and ``results.md`` (the paper's table layout) at the end.
A restart with the same arguments skips every finished batch. Batches are fixed groups of
``batch_size`` consecutive problems, each seeded from (seed, benchmark, its problem ids), so the
regenerated batches come out exactly as in an uninterrupted run, and so do the metrics.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from statistics import fmean

from sedsft.errors import UserError
from sedsft.eval.benchmarks import Problem
from sedsft.eval.generation import Backend, SamplingConfig
from sedsft.eval.grader_pool import Grader, check_grading_settings, open_grader
from sedsft.eval.metrics import BenchmarkMetrics, benchmark_metrics
from sedsft.eval.protocol import resolve_sampling
from sedsft.io import JsonlLog, atomic_write_json, atomic_write_text, read_jsonl_records
from sedsft.prompts import DEFAULT_SYSTEM_PROMPT, render_prompt
from sedsft.runs import RunSpec, digest, open_run

SAMPLES = "samples.jsonl"
# the fields that name a sample in samples.jsonl, and their types
SAMPLE_KEY = {"benchmark": str, "problem_id": (str, int), "sample_index": int}

# Column titles of Table 1; other benchmarks show their own name.
DISPLAY_NAMES = {
    "aime24": "AIME24",
    "aime25": "AIME25",
    "amc23": "AMC23",
    "gsm8k": "GSM8K",
    "math": "MATH500",
    "gaokao2023en": "GAOKAO",
    "olympiadbench": "Olympiad",
    "college_math": "College",
}


@dataclass(frozen=True)
class EvalResult:
    """Everything one run measured. ``average`` is the unweighted mean of the benchmarks' accuracies."""

    metrics: dict[str, BenchmarkMetrics]
    average: float
    records: list[dict]
    markdown: str
    output_dir: Path | None

    def to_dict(self) -> dict:
        return {"average": self.average, "benchmarks": {k: m.to_dict() for k, m in self.metrics.items()}}


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def batch_seed(seed: int, benchmark: str, problem_ids: list[str]) -> int:
    """A batch's seed from the run seed and what the batch contains, not from its position in time."""
    key = "\x1f".join([str(seed), benchmark, *problem_ids]).encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big") & 0x7FFFFFFF


def markdown_table(metrics: Mapping[str, BenchmarkMetrics], *, run_name: str = "model") -> str:
    """Table 1 (accuracy, %) and Table 2 (Self-BLEU) rows for one model, in the paper's layout."""
    names = list(metrics)
    head = "| Model | " + " | ".join(DISPLAY_NAMES.get(n, n) for n in names) + " | Avg |"
    rule = "| --- |" + " ---: |" * (len(names) + 1)
    acc = [100 * metrics[n].accuracy for n in names]
    acc_row = f"| {run_name} | " + " | ".join(f"{a:.1f}" for a in acc) + f" | {fmean(acc):.1f} |"
    bleus = [metrics[n].self_bleu for n in names]
    known = [b for b in bleus if b is not None]
    bleu_row = (
        f"| {run_name} | "
        + " | ".join("-" if b is None else f"{b:.1f}" for b in bleus)
        + (f" | {fmean(known):.1f} |" if known else " | - |")
    )
    ks = ", ".join(f"{DISPLAY_NAMES.get(n, n)} Avg@{metrics[n].num_samples}" for n in names)
    return "\n".join(
        [
            f"Accuracy (%): {ks}.",
            "",
            head,
            rule,
            acc_row,
            "",
            "Self-BLEU (lower is more diverse; '-' where a problem has one sample):",
            "",
            head,
            rule,
            bleu_row,
            "",
        ]
    )


def logged_samples(output_dir: str | Path) -> dict[tuple[str, str, int], dict]:
    """The samples an evaluation folder holds, by (benchmark, problem_id, sample_index); a damaged
    ``samples.jsonl`` is a UserError naming its line (the CLI asks before it loads the model)."""
    records = read_jsonl_records(Path(output_dir) / SAMPLES, fields=SAMPLE_KEY)
    return {(r["benchmark"], str(r["problem_id"]), r["sample_index"]): r for r in records}


def run_spec(
    problems_by_benchmark: Mapping[str, list[Problem]],
    sampling: Mapping[str, SamplingConfig],
    *,
    system_prompt: str | None,
    batch_size: int,
    graders: Mapping[str, Grader] | None = None,
    run: RunSpec | None = None,
) -> RunSpec:
    """What determines an evaluation's samples, for its run folder (``run`` adds the caller's part)."""
    settings = {
        "system_prompt": system_prompt,
        "batch_size": batch_size,
        "sampling": {n: asdict(c) for n, c in sampling.items()},
        "graders": {n: getattr(g, "__qualname__", repr(g)) for n, g in (graders or {}).items()},
        "problems": {
            n: digest([[p.id, p.question, p.answer] for p in ps]) for n, ps in problems_by_benchmark.items()
        },
    }
    return (run or RunSpec("eval")).extended(settings=settings)


def sampling_configs(
    names: list[str], sampling: SamplingConfig | Mapping[str, SamplingConfig] | None
) -> dict[str, SamplingConfig]:
    """One SamplingConfig per benchmark from ``evaluate``'s ``sampling`` argument."""
    if isinstance(sampling, SamplingConfig):
        return dict.fromkeys(names, sampling)
    if sampling is None:
        return resolve_sampling(names)
    missing = [n for n in names if n not in sampling]
    if missing:
        raise UserError(f"no SamplingConfig for benchmark {missing[0]!r}; add it to sampling")
    return {n: sampling[n] for n in names}


def evaluate(
    backend: Backend | None,
    problems_by_benchmark: Mapping[str, list[Problem]],
    *,
    sampling: SamplingConfig | Mapping[str, SamplingConfig] | None = None,
    tokenizer=None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    output_dir: str | Path | None = None,
    graders: Mapping[str, Grader] | None = None,
    batch_size: int = 8,
    grading_workers: int = 0,
    grading_timeout_s: float = 2.0,
    grading_protocol: str = "sedsft",
    run_name: str = "model",
    progress: bool = False,
    run: RunSpec | None = None,
    overwrite: bool = False,
) -> EvalResult:
    """Sample, grade and score every problem; resume from ``output_dir`` when it holds this run.

    ``sampling`` is one config for all benchmarks, one per benchmark, or None for the paper's
    protocol (benchmark names must then be the paper's). ``graders`` maps a benchmark to a
    ``(response, gold) -> bool`` function (default :func:`sedsft.eval.grading.is_correct`).
    ``grading_workers`` > 0 grades in that many processes with a hard ``grading_timeout_s`` per
    response (graders must then be module-level functions), extracting answers by ``grading_protocol``; 0 grades in this process (under the
    same limit in a main thread). A grading error or time-out grades that sample incorrect and is
    recorded in its ``grading_error`` field; the run goes on.
    ``backend`` may be None only when every sample is already in ``output_dir``. ``output_dir`` is a
    run folder (:mod:`sedsft.runs`, spec from :func:`run_spec`; ``run`` adds the caller's settings and
    inputs, e.g. the model): the same run resumes, another is refused unless ``overwrite``.
    """
    from tqdm.auto import tqdm

    names = list(problems_by_benchmark)
    configs = sampling_configs(names, sampling)
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    check_grading_settings(workers=grading_workers, timeout_s=grading_timeout_s, protocol=grading_protocol)
    tokenizer = tokenizer if tokenizer is not None else getattr(backend, "tokenizer", None)
    if tokenizer is None:
        raise UserError("evaluate needs a tokenizer (to render prompts); pass tokenizer=")
    graders = dict(graders or {})

    out = Path(output_dir) if output_dir is not None else None
    log = None
    done: dict[tuple[str, str, int], dict] = {}
    if out is not None:
        spec = run_spec(
            problems_by_benchmark,
            configs,
            system_prompt=system_prompt,
            batch_size=batch_size,
            graders=graders,
            run=run,
        )
        open_run(out, spec, overwrite=overwrite)
        log = JsonlLog(out / SAMPLES)
        done = logged_samples(out)

    records: dict[str, list[dict]] = {}
    with open_grader(workers=grading_workers, timeout_s=grading_timeout_s, protocol=grading_protocol) as pool:
        for name in names:
            problems, cfg = problems_by_benchmark[name], configs[name]
            ids = [str(p.id) for p in problems]
            if len(set(ids)) != len(ids):
                raise UserError(f"benchmark {name!r} has duplicate problem ids; ids must be unique")
            records[name] = []
            bar = tqdm(total=len(problems), desc=name, unit="problem", disable=not progress)
            for start in range(0, len(problems), batch_size):
                batch = problems[start : start + batch_size]
                prompts = [render_prompt(tokenizer, p.question, system_prompt=system_prompt) for p in batch]
                hashes = [prompt_hash(p) for p in prompts]
                keys = [[(name, str(p.id), j) for j in range(cfg.n)] for p in batch]
                for h, row in zip(hashes, keys):
                    stale = [k for k in row if k in done and done[k].get("prompt_hash") != h]
                    if stale:
                        raise UserError(
                            f"{out} has samples for {name}/{stale[0][1]} made from another prompt; "
                            "use the same tokenizer and system prompt, or another --output_dir"
                        )
                if not all(k in done for row in keys for k in row):
                    _generate_batch(
                        backend, name, batch, prompts, hashes, keys, cfg, graders.get(name), pool, done, log
                    )
                records[name] += [done[k] for row in keys for k in row]
                bar.update(len(batch))
            bar.close()

    metrics = {n: benchmark_metrics(n, records[n]) for n in names if records[n]}
    average = fmean(m.accuracy for m in metrics.values()) if metrics else 0.0
    markdown = markdown_table(metrics, run_name=run_name) if metrics else ""
    result = EvalResult(metrics, average, [r for n in names for r in records[n]], markdown, out)
    if out is not None:
        atomic_write_json(out / "metrics.json", {"run_name": run_name, **result.to_dict()})
        atomic_write_text(out / "results.md", markdown)
    return result


def _generate_batch(backend, name, batch, prompts, hashes, keys, cfg, grader, pool, done, log) -> None:
    if backend is None:
        raise UserError(f"samples for {name} are missing from the output folder and no model was given")
    seed = batch_seed(cfg.seed, name, [str(p.id) for p in batch])
    outs = backend.generate(prompts, replace(cfg, seed=seed))
    todo = [
        (p, h, k, s) for p, h, row, samples in zip(batch, hashes, keys, outs) for k, s in zip(row, samples)
    ]
    todo = [t for t in todo if t[2] not in done]  # a partly logged batch: keep the logged samples
    tasks = [(s.text, p.answer) for p, _, _, s in todo]
    grades = pool.grade(tasks, grader=grader)
    new = []
    for (p, h, k, s), g in zip(todo, grades):
        rec = {
            "benchmark": name,
            "problem_id": str(p.id),
            "sample_index": k[2],
            "prompt_hash": h,
            "gold": p.answer,
            "response": s.text,
            "extracted_answer": g.extracted,
            "correct": g.correct,
            "grading_timed_out": g.timed_out,
            "grading_error": g.error,
            "num_tokens": s.num_tokens,
            "mean_entropy": s.mean_entropy,
            "truncated": s.truncated,
        }
        done[k] = rec
        new.append(rec)
    if log is not None:
        log.extend(new)
