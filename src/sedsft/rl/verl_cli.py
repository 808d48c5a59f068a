"""``sedsft export-verl``: RL prompts as verl train/validation parquet files plus verl's reward module.

    sedsft export-verl --data ../shared/data/rl/math_level1_filtered.parquet --output_dir out/verl \\
        --val_data ../shared/data/benchmarks/math500/test.jsonl

Writes ``train.parquet``, ``validation.parquet`` (from ``--val_data``, or a ``--val_fraction`` share
of ``--data``) and ``reward.py`` (``compute_score`` for ``custom_reward_function.path``). The folder
follows :mod:`sedsft.runs`: an export with other data or options is refused there (no stale
validation file beside a new training file) unless ``--overwrite``. See docs/rl.md for the verl launch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sedsft.cli_parse import SYSTEM_PROMPT_HELP, RunOptions, parse_command, system_prompt_value
from sedsft.errors import UserError, check_choice, check_number
from sedsft.prompts import DEFAULT_SYSTEM_PROMPT
from sedsft.rl.config import REWARD_HELP
from sedsft.rl.rewards import REWARDS


@dataclass
class ExportArgs:
    """What ``sedsft export-verl`` reads and how it splits it."""

    data: str = field(
        metadata={"help": "prompt file or folder (verl, question/answer, ... layouts)", "manifest": False}
    )
    output_dir: str = field(
        metadata={"help": "where train.parquet, validation.parquet, reward.py go", "manifest": False}
    )
    val_data: str | None = field(
        default=None, metadata={"help": "a separate prompt file for the validation split", "manifest": False}
    )
    val_fraction: float | None = field(
        default=None,
        metadata={"help": "share of --data held out for validation, in [0, 1) (not with --val_data)"},
    )
    seed: int = field(default=0, metadata={"help": "seed of the --val_fraction draw"})
    data_source: str = field(default="sedsft_math", metadata={"help": "the data_source column"})
    reward: str = field(default="math", metadata={"help": REWARD_HELP, "choices": list(REWARDS)})
    system_prompt: str | None = field(default=DEFAULT_SYSTEM_PROMPT, metadata={"help": SYSTEM_PROMPT_HELP})

    def __post_init__(self):
        check_number("val_fraction", self.val_fraction, low=0, high=1, open_high=True, allow_none=True)
        if self.val_data is not None and self.val_fraction is not None:
            raise UserError("give --val_data or --val_fraction, not both")
        self.system_prompt = system_prompt_value(self.system_prompt)
        check_choice("reward", self.reward, tuple(REWARDS))


def main(argv: list[str]) -> int:
    args, run_options = parse_command(
        "export-verl", argv, ExportArgs, RunOptions, description=__doc__.split("\n")[0]
    )
    from sedsft.rl.prompts import load_rl_prompts
    from sedsft.rl.verl import export_verl
    from sedsft.runs import RunSpec

    prompts = load_rl_prompts(args.data, system_prompt=args.system_prompt)
    val = load_rl_prompts(args.val_data, system_prompt=args.system_prompt) if args.val_data else None
    result = export_verl(
        prompts,
        args.output_dir,
        val_fraction=args.val_fraction or 0.0,
        val_prompts=val,
        data_source=args.data_source,
        seed=args.seed,
        reward=args.reward,
        run=RunSpec(
            "export-verl",
            settings={"system_prompt": args.system_prompt},
            inputs={"data": args.data, "val_data": args.val_data},
        ),
        overwrite=run_options.overwrite,
        wait=run_options.wait,
    )
    val_text = f", {result.num_val} validation rows -> {result.val_path}" if result.val_path else ""
    print(
        f"sedsft export-verl: {result.num_train} train rows -> {result.train_path}{val_text}; "
        f"reward module ({args.reward}) -> {result.reward_path}"
    )
    return 0
