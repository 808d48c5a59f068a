"""``sedsft calibrate``: tau for SED-SFT from a local model and data file, printed and saved as JSON.

    sedsft calibrate --model ./Qwen2.5-Math-7B --data data/train.jsonl --top_k 2 --mask_ratio 0.7

The options are ``sedsft sft``'s, spelled the same (:class:`~sedsft.calibrate.CalibrationOptions`:
``--mask_ratio``, ``--calibration_preset``, ``--calibration_examples`` ...; ``--top_k``, ``--seed``,
``--max_length``, ``--overflow``, ``--system_prompt``), so the printed tau is the one training would
calibrate; pass it to ``sedsft sft --tau`` to skip that step. Records are bounded as sft bounds them:
by ``--max_length``, per ``--overflow``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from sedsft.calibrate import CALIBRATION_FILE, DEFAULT_SEED, CalibrationOptions
from sedsft.cli_parse import (
    SYSTEM_PROMPT_HELP,
    CommandParser,
    ModelOptions,
    OverflowOptions,
    system_prompt_value,
)
from sedsft.errors import UserError, check_count
from sedsft.io import check_file_path
from sedsft.prompts import DEFAULT_SYSTEM_PROMPT

# the spellings of earlier versions, now sedsft sft's
RENAMED = {
    "--num_examples": "--calibration_examples",
    "--positions": "--calibration_positions",
    "--batch_size": "--calibration_batch_size",
    "--max_tokens": "--calibration_max_tokens",
}


@dataclass
class CalibrateArgs:
    """The data and how it is rendered, as ``sedsft sft`` renders it; where the JSON goes."""

    data: str = field(metadata={"help": "local .jsonl/.json/.parquet training file or folder"})
    top_k: int = field(default=2, metadata={"help": "k of the mask's P_topk (the paper's 2)"})
    seed: int = field(default=DEFAULT_SEED, metadata={"help": "sampling seed (sedsft sft's --seed)"})
    max_length: int = field(default=1024, metadata={"help": "as sedsft sft's --max_length"})
    system_prompt: str | None = field(default=DEFAULT_SYSTEM_PROMPT, metadata={"help": SYSTEM_PROMPT_HELP})
    output: str = field(default=CALIBRATION_FILE, metadata={"help": "where the JSON is written (atomically)"})

    def __post_init__(self):
        check_count("top_k", self.top_k)
        check_count("max_length", self.max_length)
        self.system_prompt = system_prompt_value(self.system_prompt)
        if os.path.isdir(self.output):
            raise UserError(
                f"--output {self.output} is a folder; give a file path, e.g. {self.output}/{CALIBRATION_FILE}"
            )
        check_file_path(self.output, flag="--output")


def main(argv: list[str]) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = CommandParser(
        "calibrate",
        (CalibrateArgs, CalibrationOptions, ModelOptions, OverflowOptions),
        description=__doc__.split("\n")[0],
        renamed=RENAMED,
    )
    a, options, m, o = parser.parse(argv)
    spec = options.calibration_spec(top_k=a.top_k, seed=a.seed)  # checked before anything is loaded
    from sedsft.calibrate import calibrate_records, sample_indices
    from sedsft.data import check_records_fit, load_records
    from sedsft.limits import local_token_limit
    from sedsft.models import load_local_model

    records = load_records(a.data)
    path = m.checked(system_prompt=a.system_prompt)  # before the data is tokenized: a wrong path fails at once
    check_tok, limit = local_token_limit(  # as sft bounds records, read before the weights are
        path,
        tokenizer=m.tokenizer,
        max_length=a.max_length,
        max_length_wins=True,
        trust_remote_code=m.trust_remote_code,
    )
    if o.overflow == "error":
        sample = sample_indices(len(records), examples=spec.examples, seed=spec.seed, rule=spec.sample)
        check_records_fit([records[i] for i in sample], check_tok, limit=limit, system_prompt=a.system_prompt)
    model, tok = load_local_model(
        path,
        tokenizer_path=m.tokenizer,
        dtype=m.dtype,
        device=m.device,
        trust_remote_code=m.trust_remote_code,
    )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    cal = calibrate_records(
        model,
        tok,
        records,
        spec,
        system_prompt=a.system_prompt,
        max_length=limit.tokens,
        overflow=o.overflow,
        limit_reason=limit.reason,
        source={"dataset": a.data, "model": path},
    )
    cal.save(a.output)
    print(
        f"tau = {cal.tau:.6f}  (top_k={spec.top_k}, r={spec.mask_ratio}, {cal.num_positions} positions from "
        f"{cal.num_sequences} of {len(records)} records; written to {a.output})"
    )
    return 0
