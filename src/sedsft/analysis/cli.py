"""``sedsft analyze``: the paper's analysis tools on a model and a data file.

    sedsft analyze topk --model PATH --data train.jsonl [--num_examples 100] [--max_k 10] [--output_dir DIR]
    sedsft analyze heatmap --model PATH --data train.jsonl --index 3 [--tau 0.8 | --mask_ratio 0.7]
    sedsft analyze heatmap --model PATH --question "..." --response "..." --tau 0.8
    sedsft analyze weights [--lams 1,2,4] [--runs SFT_DIR ...] [--output_dir DIR]

Bad input (a missing file, an index out of range, ``--tau`` with ``--mask_ratio``) is reported as one
line and exit status 2, before the model is loaded. ``--output_dir`` is a run folder
(:mod:`sedsft.runs`): another model, data or option is refused there unless ``--overwrite``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sedsft.calibrate import DEFAULT_SEED, sample_indices
from sedsft.cli_parse import (
    SYSTEM_PROMPT_HELP,
    ModelOptions,
    OverflowOptions,
    RunOptions,
    parse_command,
    system_prompt_value,
)
from sedsft.errors import UserError, check_count, check_number
from sedsft.prompts import DEFAULT_SYSTEM_PROMPT

from .inputs import MAX_LENGTH

DEFAULT_MASK_RATIO = 0.7
TOOLS = {
    "topk": "cumulative top-k probability per position, k = 1..max_k (Figure 3)",
    "heatmap": "per-token gold probability over one example (Figure 2), PNG + HTML",
    "weights": "effective gradient weight w(p) of every objective, p*(lambda), and w measured by SFT runs",
}


@dataclass
class AnalysisArgs:
    """Options both tools share: the data sample and how records are rendered (as SFT renders them)."""

    data: str | None = field(
        default=None, metadata={"help": "JSONL/JSON/Parquet file or folder of SFT records", "manifest": False}
    )
    system_prompt: str | None = field(default=DEFAULT_SYSTEM_PROMPT, metadata={"help": SYSTEM_PROMPT_HELP})
    max_length: int | None = field(
        default=MAX_LENGTH,
        metadata={
            "help": "token limit of an example (default: sft's 1024; 'none': the model's context), see --overflow"
        },
    )
    batch_size: int = field(default=8, metadata={"help": "sequences per forward pass"})
    seed: int = field(default=DEFAULT_SEED, metadata={"help": "seed of the data sample (sft's --seed)"})
    num_examples: int = field(default=100, metadata={"help": "records sampled from --data (all if fewer)"})

    def __post_init__(self):
        self.system_prompt = system_prompt_value(self.system_prompt)
        check_count("max_length", self.max_length, allow_none=True)
        check_count("batch_size", self.batch_size)
        check_count("seed", self.seed, minimum=0)
        check_count("num_examples", self.num_examples)


@dataclass
class TopkArgs(AnalysisArgs):
    """``sedsft analyze topk``."""

    max_k: int = field(default=10, metadata={"help": "largest k of P_topk"})
    mask_ratios: list[float] = field(
        default_factory=lambda: [0.5, 0.6, 0.7, 0.8, 0.9],
        metadata={"help": "masking ratios r of the tau table (space- or comma-separated)"},
    )
    max_tokens: int | None = field(default=None, metadata={"help": "stop after this many scored positions"})
    output_dir: str = field(
        default="analysis/topk", metadata={"help": "where the figure and tables go", "manifest": False}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.data is None:
            raise UserError("--data is required: the records to score")
        check_count("max_k", self.max_k)
        check_count("max_tokens", self.max_tokens, allow_none=True)
        if not self.mask_ratios:
            raise UserError("--mask_ratios is empty; give e.g. --mask_ratios 0.5,0.7,0.9")
        for r in self.mask_ratios:
            check_number("mask_ratios", r, low=0, high=1)


@dataclass
class HeatmapArgs(AnalysisArgs):
    """``sedsft analyze heatmap``: one example, from --data/--index or --question/--response."""

    index: int | None = field(default=None, metadata={"help": "record index in --data (0-based)"})
    question: str | None = field(default=None, metadata={"help": "the question, instead of --data/--index"})
    response: str | None = field(default=None, metadata={"help": "the response to score, with --question"})
    top_k: int = field(default=2, metadata={"help": "k of P_topk"})
    tau: float | None = field(
        default=None, metadata={"help": "SED's threshold (default: calibrated on --data)"}
    )
    mask_ratio: float | None = field(
        default=None,
        metadata={
            "help": f"r used to calibrate tau on --data (default {DEFAULT_MASK_RATIO}; not with --tau)"
        },
    )
    num_alternatives: int = field(default=5, metadata={"help": "top alternatives shown per token"})
    output_dir: str = field(
        default="analysis/heatmap", metadata={"help": "where the PNG/HTML/JSON go", "manifest": False}
    )

    def __post_init__(self):
        super().__post_init__()
        check_count("top_k", self.top_k)
        check_count("num_alternatives", self.num_alternatives, minimum=0)
        check_number("tau", self.tau, low=0, allow_none=True)
        check_number("mask_ratio", self.mask_ratio, low=0, high=1, allow_none=True)
        if self.tau is not None and self.mask_ratio is not None:
            raise UserError(
                "give --tau (use this threshold) or --mask_ratio (calibrate one on --data), not both"
            )
        if (self.question is None) != (self.response is None):
            raise UserError("give both --question and --response, or use --data with --index")
        if self.question is not None and self.index is not None:
            raise UserError("give --question/--response or --index, not both")
        if self.question is None and (self.data is None or self.index is None):
            raise UserError("choose the example: --data FILE --index I, or --question TEXT --response TEXT")
        check_count("index", self.index, minimum=0, allow_none=True)


@dataclass
class WeightsArgs:
    """``sedsft analyze weights``: no model; the registry's objectives and, optionally, finished SFT runs."""

    lams: list[float] = field(
        default_factory=lambda: [1.0, 2.0, 4.0],
        metadata={"help": "SED-SFT lambdas to draw (space- or comma-separated)"},
    )
    gem_beta: float | None = field(
        default=None, metadata={"help": "GEM's beta for its curve (default: the registry's)"}
    )
    runs: list[str] | None = field(
        default=None,
        metadata={
            "help": "sft output folders (or their sedsft_metrics.jsonl) whose logged w to show",
            "manifest": False,
        },
    )
    output_dir: str = field(
        default="analysis/weights", metadata={"help": "where weights.png/.csv/.md go", "manifest": False}
    )

    def __post_init__(self):
        if not self.lams:
            raise UserError("--lams is empty; give e.g. --lams 1,2,4")
        for lam in self.lams:
            check_number("lams", lam, low=0)
        check_number("gem_beta", self.gem_beta, low=0, open_low=True, allow_none=True)


def run_weights(args: WeightsArgs, run_options: RunOptions) -> int:
    from sedsft.runs import RunSpec, open_run, settings_of

    from .weights import measured_weights, stationary_point, write_weights

    runs = args.runs or []
    paths = [Path(r) / "sedsft_metrics.jsonl" if Path(r).is_dir() else Path(r) for r in runs]
    measured = {r: measured_weights(p) for r, p in zip(runs, paths)}  # each run labelled as given
    inputs = {f"run{i}": str(p) for i, p in enumerate(paths)}
    open_run(
        args.output_dir,
        RunSpec("analyze weights", settings=settings_of(args), inputs=inputs),
        overwrite=run_options.overwrite,
        wait=run_options.wait,
    )
    beta = {"gem_beta": args.gem_beta} if args.gem_beta is not None else {}
    files = write_weights(args.output_dir, lams=args.lams, measured=measured, **beta)
    for lam in args.lams:
        star = stationary_point(lam)
        print(
            f"lambda {lam:g}: "
            + ("w >= 0 for every p < 1 (no stationary point)" if star is None else f"p* = {star:.4f}")
        )
    print(files["table"].read_text(), end="")
    print(f"wrote {', '.join(p.name for p in files.values())} to {args.output_dir}")
    return 0


def run_topk(
    args: TopkArgs, model_options: ModelOptions, overflow: OverflowOptions, run_options: RunOptions
) -> int:
    from .inputs import load_model_and_tokenizer, read_records
    from .topk import analyze_topk

    records = read_records(args.data)
    sample = sample_indices(len(records), examples=args.num_examples, seed=args.seed)  # analyze_topk's
    limit = _token_limit(args, model_options, overflow, [records[i] for i in sample])
    _open_run("topk", args, model_options, overflow, run_options)
    model, tokenizer = load_model_and_tokenizer(
        model_options.model,
        tokenizer_path=model_options.tokenizer,
        device=model_options.device,
        dtype=model_options.dtype,
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
        system_prompt=args.system_prompt,
        max_length=limit.tokens,
        overflow=overflow.overflow,
        limit_reason=limit.reason,
        max_tokens=args.max_tokens,
        output_dir=args.output_dir,
        meta={"model": model_options.model, "data": str(args.data), "records": len(records)},
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


def run_heatmap(
    args: HeatmapArgs, model_options: ModelOptions, overflow: OverflowOptions, run_options: RunOptions
) -> int:
    from sedsft.calibrate import CalibrationSpec, calibrate_records

    from .heatmap import analyze_heatmap
    from .inputs import load_model_and_tokenizer, read_records

    records = read_records(args.data) if args.data is not None else None
    if args.question is not None:
        record, name = {"question": args.question, "response": args.response}, "heatmap_text"
    elif not args.index < len(records):
        raise UserError(
            f"--index {args.index} is out of range: {args.data} has {len(records)} records (0..{len(records) - 1})"
        )
    else:
        record, name = records[args.index], f"heatmap_{args.index}"
    sample = (
        []
        if records is None or args.tau is not None
        else sample_indices(len(records), examples=args.num_examples, seed=args.seed)
    )
    limit = _token_limit(args, model_options, overflow, [record, *(records[i] for i in sample)])
    _open_run("heatmap", args, model_options, overflow, run_options)
    model, tokenizer = load_model_and_tokenizer(
        model_options.model,
        tokenizer_path=model_options.tokenizer,
        device=model_options.device,
        dtype=model_options.dtype,
    )
    bounds = {"max_length": limit.tokens, "overflow": overflow.overflow, "limit_reason": limit.reason}
    tau, how = args.tau, "given"
    if tau is None and records is not None:
        mask_ratio = args.mask_ratio if args.mask_ratio is not None else DEFAULT_MASK_RATIO
        spec = CalibrationSpec.from_preset(
            top_k=args.top_k,
            mask_ratio=mask_ratio,
            seed=args.seed,
            examples=args.num_examples,
            batch_size=args.batch_size,
        )
        cal = calibrate_records(model, tokenizer, records, spec, system_prompt=args.system_prompt, **bounds)
        tau = cal.tau
        how = f"calibrated on {cal.num_sequences} records of {args.data} with r = {mask_ratio:g}"
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
        system_prompt=args.system_prompt,
        **bounds,
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


def _token_limit(args: AnalysisArgs, model_options: ModelOptions, overflow: OverflowOptions, records):
    """What an example is bounded by (--max_length, the model's context, the tokenizer's model_max_length),
    read before the run folder is opened; with ``--overflow error`` the ``records`` to score are checked."""
    from sedsft.data import check_records_fit
    from sedsft.limits import local_token_limit

    tokenizer, limit = local_token_limit(
        model_options.checked(system_prompt=args.system_prompt),
        tokenizer=model_options.tokenizer,
        max_length=args.max_length,
        trust_remote_code=model_options.trust_remote_code,
    )
    if overflow.overflow == "error":
        check_records_fit(records, tokenizer, limit=limit, system_prompt=args.system_prompt)
    return limit


def _open_run(tool: str, args, model_options: ModelOptions, overflow, run_options: RunOptions) -> None:
    from sedsft.runs import RunSpec, open_run, settings_of

    model_options.checked(system_prompt=args.system_prompt)  # before the run folder is opened
    spec = RunSpec(
        f"analyze {tool}",
        settings=settings_of(args, model_options, overflow),
        inputs={"model": model_options.model, "tokenizer": model_options.tokenizer, "data": args.data},
    )
    open_run(args.output_dir, spec, overwrite=run_options.overwrite, wait=run_options.wait)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in TOOLS:
        if argv and argv[0] in ("-h", "--help"):
            print(__doc__)
            return 0
        given = f"{argv[0]!r}" if argv else "nothing"
        raise UserError(f"choose a tool: sedsft analyze {' | '.join(TOOLS)} ... (got {given})")
    tool, rest = argv[0], argv[1:]
    if tool == "weights":
        args, run_options = parse_command(
            "analyze weights", rest, WeightsArgs, RunOptions, description=TOOLS[tool]
        )
        return run_weights(args, run_options)
    args, model_options, overflow, run_options = parse_command(
        f"analyze {tool}",
        rest,
        TopkArgs if tool == "topk" else HeatmapArgs,
        ModelOptions,
        OverflowOptions,
        RunOptions,
        description=TOOLS[tool],
    )
    return (run_topk if tool == "topk" else run_heatmap)(args, model_options, overflow, run_options)
