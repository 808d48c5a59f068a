"""``sedsft filter``: keep the RL prompts a model sometimes, but not always, solves.

    sedsft filter --model out/sft-sed --data prompts.parquet --n 8 --output_dir out/filter

Writes to ``--output_dir``: ``solve_rates.jsonl`` (one line per sampled prompt: index, solve rate,
per-sample correctness and extracted answers; the resume log), ``kept.<ext>`` (the kept records in
the input's own layout and format, or ``kept.parquet`` in verl's layout with ``--output_format verl``)
and ``summary.json``. The sampling options are :class:`~sedsft.rl.filter.FilterConfig`'s. The folder
follows :mod:`sedsft.runs`: rerunning the same command resumes (and equals an uninterrupted run);
other options, another model or other data are refused unless ``--overwrite``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from sedsft.cli_parse import (
    SYSTEM_PROMPT_HELP,
    BackendOptions,
    GradingOptions,
    ModelOptions,
    RunOptions,
    overflow_field,
    parse_command,
    system_prompt_value,
)
from sedsft.errors import check_choice, check_count
from sedsft.io import atomic_write_json, atomic_write_text, read_json
from sedsft.limits import OVERFLOW
from sedsft.prompts import DEFAULT_SYSTEM_PROMPT
from sedsft.rl.filter import FilterConfig


@dataclass
class FilterArgs:
    """What ``sedsft filter`` reads and writes (the sampling itself: FilterConfig)."""

    data: str = field(
        metadata={"help": "prompt file or folder (verl, question/answer, ... layouts)", "manifest": False}
    )
    output_dir: str = field(
        metadata={"help": "where solve_rates.jsonl, kept.*, summary.json go", "manifest": False}
    )
    limit: int | None = field(default=None, metadata={"help": "only the first LIMIT records"})
    system_prompt: str | None = field(default=DEFAULT_SYSTEM_PROMPT, metadata={"help": SYSTEM_PROMPT_HELP})
    overflow: str = overflow_field("drop")  # a question cut short has lost what it asks (as grpo's)
    output_format: str = field(
        default="same",
        metadata={"help": "kept prompts: the input's layout ('same') or verl's", "choices": ["same", "verl"]},
    )
    data_source: str = field(
        default="sedsft_math", metadata={"help": "data_source column with --output_format verl"}
    )
    batch_size: int = field(default=8, metadata={"help": "hf backend: sequences per generate batch"})
    progress: bool = field(default=True, metadata={"help": "a progress bar", "manifest": False})

    def __post_init__(self):
        check_count("limit", self.limit, allow_none=True)
        check_count("batch_size", self.batch_size)
        check_choice("output_format", self.output_format, ("same", "verl"))
        check_choice("overflow", self.overflow, OVERFLOW)
        self.system_prompt = system_prompt_value(self.system_prompt)


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


def _report(summary: dict, *, again: bool) -> None:
    print(
        f"sedsft filter: kept {summary['kept']} of {summary['prompts']} prompts "
        f"({summary['always_solved']} always solved, {summary['never_solved']} never solved, "
        f"{summary['no_gold']} without gold) -> {summary['kept_file'] or 'nothing to write'}"
        + ("  (this run had finished; --overwrite redoes it)" if again else "")
    )


def main(argv: list[str]) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args, config, model, backend_options, grading, run_options = parse_command(
        "filter",
        argv,
        FilterArgs,
        FilterConfig,
        ModelOptions,
        BackendOptions,
        GradingOptions,
        RunOptions,
        description=__doc__.split("\n")[0],
    )
    from sedsft.data import load_records
    from sedsft.eval.generation import backend_from_options
    from sedsft.eval.grader_pool import open_grader
    from sedsft.limits import local_token_limit
    from sedsft.rl.filter import filter_prompts
    from sedsft.rl.prompts import bound_prompts, rl_prompts_from_records
    from sedsft.rl.verl import to_verl_rows, write_verl_parquet
    from sedsft.runs import RunSpec, open_run, settings_of

    data_path, out_dir = Path(args.data), Path(args.output_dir)
    records = load_records(data_path, limit=args.limit)
    prompts = rl_prompts_from_records(records, system_prompt=args.system_prompt, source=str(data_path))
    model.checked(system_prompt=args.system_prompt)  # before the run folder is opened
    tokenizer, limit = local_token_limit(
        model.model, tokenizer=model.tokenizer, trust_remote_code=model.trust_remote_code
    )
    prompts = bound_prompts(prompts, tokenizer, limit=limit, overflow=args.overflow)
    spec = RunSpec(
        "filter",
        settings=settings_of(args, config, model, backend_options, grading),
        inputs={"model": model.model, "tokenizer": model.tokenizer, "data": data_path},
    )
    run = open_run(out_dir, spec, overwrite=run_options.overwrite, wait=run_options.wait)
    if run.finished and (out_dir / "summary.json").is_file():  # else rebuilt from solve_rates.jsonl
        _report(read_json(out_dir / "summary.json"), again=True)
        return 0

    backend = backend_from_options(model, backend_options, batch_size=args.batch_size)
    log_path = out_dir / "solve_rates.jsonl"
    with open_grader(
        workers=grading.grading_workers, timeout_s=grading.grading_timeout, protocol=grading.grading_protocol
    ) as pool:
        result = filter_prompts(
            prompts, backend, config=config, pool=pool, log_path=log_path, progress=args.progress
        )

    if not result.kept:
        kept_path = None
    elif args.output_format == "verl":
        rows = to_verl_rows([prompts[i] for i in result.kept], split="train", data_source=args.data_source)
        kept_path = write_verl_parquet(rows, out_dir / "kept.parquet")
    else:
        kept_path = write_same_layout([records[prompts[i].index] for i in result.kept], data_path, out_dir)
    summary = {
        **result.summary(),
        "n": config.n,
        "model": model.model,
        "data": str(data_path),
        "kept_file": kept_path,
    }
    atomic_write_json(out_dir / "summary.json", summary)
    run.mark_finished()
    _report(json.loads(json.dumps(summary, default=str)), again=False)
    return 0
