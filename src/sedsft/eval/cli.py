"""`sedsft eval`: the paper's evaluation of a local checkpoint, or grading of existing responses.

    sedsft eval --model PATH --benchmarks all --data_dir ../shared/data/benchmarks --output_dir runs/eval
    sedsft eval --responses responses.jsonl [--output_dir runs/graded]

``--output_dir`` is a run folder (:mod:`sedsft.runs`): rerunning the same command resumes an
interrupted run (exactly: the result equals an uninterrupted run) and only reports a finished one;
another model, other benchmarks or other sampling options are refused there unless ``--overwrite``.
A question whose prompt is longer than the model's context (or the tokenizer's ``model_max_length``) is
refused by default, naming its benchmark and problem; ``--overflow drop`` leaves it out (counted),
``--overflow truncate`` cuts the question's end.
"""

from __future__ import annotations

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
from sedsft.errors import UserError, check_choice, check_count
from sedsft.limits import OVERFLOW
from sedsft.prompts import DEFAULT_SYSTEM_PROMPT

SAMPLING_OVERRIDES = ("n", "temperature", "top_p", "max_new_tokens")


@dataclass
class EvalArgs:
    """What ``sedsft eval`` evaluates and how it samples (the model: ModelOptions' ``--model``)."""

    responses: str | None = field(
        default=None,
        metadata={
            "help": "JSONL of existing responses to grade instead of a model: fields response, gold (or "
            "answer), optional benchmark, problem_id (or id), sample_index",
            "manifest": False,
        },
    )
    benchmarks: str = field(default="all", metadata={"help": "'all' or comma-separated benchmark names"})
    data_dir: str = field(
        default="../shared/data/benchmarks",
        metadata={"help": "folder with <benchmark>/test.jsonl", "manifest": False},
    )
    output_dir: str | None = field(
        default=None,
        metadata={
            "help": "where samples.jsonl, metrics.json, results.md go (needed with --model)",
            "manifest": False,
        },
    )
    protocol: str = field(
        default="paper",
        metadata={
            "help": "paper (Avg@8 T=0.7 on AIME/AMC, 1 sample T=1.0 elsewhere) or greedy",
            "choices": ["paper", "greedy"],
        },
    )
    n: int | None = field(default=None, metadata={"help": "override: samples per problem on every benchmark"})
    temperature: float | None = field(
        default=None, metadata={"help": "override: temperature on every benchmark"}
    )
    top_p: float | None = field(default=None, metadata={"help": "override: nucleus mass on every benchmark"})
    max_new_tokens: int | None = field(
        default=None, metadata={"help": "override: token budget (protocol: 4096)"}
    )
    limit: int | None = field(
        default=None, metadata={"help": "only the first LIMIT problems of each benchmark"}
    )
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    system_prompt: str | None = field(default=DEFAULT_SYSTEM_PROMPT, metadata={"help": SYSTEM_PROMPT_HELP})
    # a question longer than the model's context: refused, since a benchmark is scored whole
    overflow: str = overflow_field("error")
    batch_size: int = field(default=8, metadata={"help": "problems per generate call"})
    run_name: str | None = field(
        default=None,
        metadata={"help": "row label in the tables (default: the model folder name)", "manifest": False},
    )
    progress: bool = field(default=True, metadata={"help": "progress bars", "manifest": False})

    def __post_init__(self):
        from sedsft.eval.generation import SamplingConfig
        from sedsft.eval.protocol import PROTOCOLS

        check_choice("protocol", self.protocol, PROTOCOLS)
        check_choice("overflow", self.overflow, OVERFLOW)
        overrides = {k: getattr(self, k) for k in SAMPLING_OVERRIDES if getattr(self, k) is not None}
        SamplingConfig(**overrides)  # each given override is checked as the sampling config checks it
        check_count("limit", self.limit, allow_none=True)
        check_count("seed", self.seed, minimum=0)
        check_count("batch_size", self.batch_size)
        self.system_prompt = system_prompt_value(self.system_prompt)


def main(argv: list[str]) -> int:
    args, model, backend, grading, run_options = parse_command(
        "eval",
        argv,
        EvalArgs,
        ModelOptions,
        BackendOptions,
        GradingOptions,
        RunOptions,
        description=__doc__.split("\n")[0],
    )
    if (args.responses is None) == (model.model is None):
        raise UserError("give --model (to sample and grade) or --responses (to grade a file), one of them")
    if args.responses:
        given = [f"--{k}" for k in (*SAMPLING_OVERRIDES, "limit") if getattr(args, k) is not None]
        if given:
            raise UserError(
                f"{', '.join(given)} apply to --model runs; --responses files are graded as they are"
            )
        return _grade_responses(args, grading, run_options)
    return _evaluate_model(args, model, backend, grading, run_options)


def _bound_questions(problems: dict, tokenizer, limit, *, overflow: str, args) -> dict:
    """Each benchmark's problems whose prompt fits ``limit`` (``sedsft.limits.bound_prompt``), per ``overflow``."""
    import logging
    from dataclasses import replace

    from sedsft.limits import bound_prompt
    from sedsft.prompts import build_messages

    out = {}
    for name, ps in problems.items():
        kept = []
        for p in ps:
            messages = build_messages(p.question, system_prompt=args.system_prompt)
            where = f"{name} problem {p.id}"
            fitted = bound_prompt(
                tokenizer, messages, limit=limit, overflow=overflow, source=where, what="the question"
            )
            if fitted is not None:
                kept.append(p if fitted is messages else replace(p, question=fitted[-1]["content"]))
        if len(kept) < len(ps):
            logging.getLogger("sedsft.eval").warning(
                "%s: %d of %d questions dropped as longer than %s", name, len(ps) - len(kept), len(ps), limit
            )
        if not kept:
            raise UserError(
                f"{name}: every question is longer than {limit}; use a model with a longer context"
            )
        out[name] = kept
    return out


def _evaluate_model(args, model, backend_options, grading, run_options) -> int:
    from sedsft.eval.benchmarks import load, parse_names
    from sedsft.eval.generation import backend_from_options
    from sedsft.eval.protocol import resolve_sampling
    from sedsft.eval.runner import evaluate, logged_samples, run_spec
    from sedsft.limits import local_token_limit
    from sedsft.runs import RunSpec, open_run, settings_of

    path = Path(model.checked(system_prompt=args.system_prompt))  # before any output is written
    if not args.output_dir:
        raise UserError("--output_dir is required with --model (samples are saved there as they are made)")
    names = parse_names(args.benchmarks)
    problems = {n: load(n, args.data_dir, limit=args.limit) for n in names}
    tokenizer, limit = local_token_limit(
        str(path), tokenizer=model.tokenizer, trust_remote_code=model.trust_remote_code
    )
    problems = _bound_questions(problems, tokenizer, limit, overflow=args.overflow, args=args)
    sampling = resolve_sampling(
        names,
        protocol=args.protocol,
        **{k: getattr(args, k) for k in SAMPLING_OVERRIDES},
        seed=args.seed,
    )
    out = Path(args.output_dir)
    caller = RunSpec(
        "eval",
        settings=settings_of(args, model, backend_options, grading),
        inputs={"model": path, "tokenizer": model.tokenizer},
    )
    spec = run_spec(
        problems, sampling, system_prompt=args.system_prompt, batch_size=args.batch_size, run=caller
    )
    # before the (slow) model load
    run = open_run(out, spec, overwrite=run_options.overwrite, wait=run_options.wait)
    if run.finished and (out / "results.md").is_file():  # else its tables are rebuilt from samples.jsonl
        print(f"{out}: this run had finished; its results (--overwrite redoes it):\n")
        print((out / "results.md").read_text(encoding="utf-8"))
        return 0
    logged_samples(out)  # a damaged samples.jsonl is refused before the (slow) model load

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = evaluate(
        backend_from_options(model, backend_options, batch_size=args.batch_size),
        problems,
        sampling=sampling,
        system_prompt=args.system_prompt,
        output_dir=out,
        batch_size=args.batch_size,
        grading_workers=grading.grading_workers,
        grading_timeout_s=grading.grading_timeout,
        grading_protocol=grading.grading_protocol,
        run_name=args.run_name or path.resolve().name,
        progress=args.progress,
        run=caller,
    )
    run.mark_finished()
    print(result.markdown)
    print(f"samples, metrics.json and results.md are in {out}")
    return 0


def _grade_responses(args, grading, run_options) -> int:
    from sedsft.eval.responses import grade_responses, read_responses
    from sedsft.runs import RunSpec, open_run, settings_of

    by_bench = read_responses(args.responses)  # a broken file is refused before any folder is touched
    run = None
    if args.output_dir:
        spec = RunSpec(
            "eval --responses", settings=settings_of(grading), inputs={"responses": args.responses}
        )
        run = open_run(args.output_dir, spec, overwrite=run_options.overwrite, wait=run_options.wait)
    result = grade_responses(
        by_bench,
        workers=grading.grading_workers,
        timeout_s=grading.grading_timeout,
        protocol=grading.grading_protocol,
        output_dir=run.path if run is not None else None,
        run_name=args.run_name or Path(args.responses).stem,
    )
    if run is not None:
        run.mark_finished()
    print(result.markdown)
    return 0
