"""``sedsft export-verl``: RL prompts as verl train/validation parquet files plus verl's reward module.

    sedsft export-verl --data ../shared/data/rl/math_level1_filtered.parquet --output_dir out/verl \\
        --val_data ../shared/data/benchmarks/math500/test.jsonl

Writes ``train.parquet``, ``validation.parquet`` (from ``--val_data``, or a ``--val_fraction`` share
of ``--data``) and ``reward.py`` (``compute_score`` for ``custom_reward_function.path``). See
docs/rl.md for the verl launch command with the paper's hyper-parameters.
"""

from __future__ import annotations

import argparse

from sedsft.errors import UserError
from sedsft.prompts import DEFAULT_SYSTEM_PROMPT


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line through sedsft's dispatcher instead of usage + exit
        raise UserError(f"{message}; see sedsft export-verl --help")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sedsft export-verl", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="prompt file or folder (verl, question/answer, ... layouts)")
    p.add_argument(
        "--output_dir", required=True, help="where train.parquet, validation.parquet, reward.py go"
    )
    val = p.add_mutually_exclusive_group()
    val.add_argument("--val_data", help="a separate prompt file for the validation split")
    val.add_argument(
        "--val_fraction", type=float, default=0.0, help="share of --data held out for validation"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the --val_fraction draw")
    p.add_argument("--data_source", default="sedsft_math", help="the data_source column")
    p.add_argument(
        "--system_prompt", default=DEFAULT_SYSTEM_PROMPT, help="system turn for prompts without one"
    )
    p.add_argument("--no_system_prompt", action="store_true", help="add no system turn")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from sedsft.rl.prompts import load_rl_prompts
    from sedsft.rl.verl import export_verl

    system_prompt = None if args.no_system_prompt else (args.system_prompt or None)
    prompts = load_rl_prompts(args.data, system_prompt=system_prompt)
    val = load_rl_prompts(args.val_data, system_prompt=system_prompt) if args.val_data else None
    result = export_verl(
        prompts,
        args.output_dir,
        val_fraction=args.val_fraction,
        val_prompts=val,
        data_source=args.data_source,
        seed=args.seed,
    )
    val_text = f", {result.num_val} validation rows -> {result.val_path}" if result.val_path else ""
    print(
        f"sedsft export-verl: {result.num_train} train rows -> {result.train_path}{val_text}; "
        f"reward module -> {result.reward_path}"
    )
    return 0
