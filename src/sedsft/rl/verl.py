"""Export RL prompts in the verl framework's layout, with a reward module verl can load.

verl reads Parquet files whose rows are::

    data_source   str                                   routes the reward (ours ignores it)
    prompt        list of {"role", "content"}           chat messages; verl applies the chat template
    ability       str                                   "math"
    reward_model  {"style": "rule", "ground_truth": str}
    extra_info    {"split": str, "index": int}

:func:`export_verl` writes ``train.parquet``, ``validation.parquet`` (a seeded random share of the
prompts, or another prompt file) and ``reward.py`` (a copy of ``sedsft.rl.verl_reward``). docs/rl.md
shows the multi-node verl launch with the paper's hyper-parameters.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sedsft.errors import UserError, check_choice, check_number
from sedsft.io import atomic_write_bytes
from sedsft.rl.prompts import RLPrompt
from sedsft.rl.rewards import REWARDS
from sedsft.runs import RunSpec, digest, open_run

logger = logging.getLogger(__name__)

VERL_COLUMNS = ("data_source", "prompt", "ability", "reward_model", "extra_info")
DEFAULT_DATA_SOURCE = "sedsft_math"


@dataclass(frozen=True)
class VerlExport:
    """Paths and row counts written by :func:`export_verl`."""

    train_path: Path
    val_path: Path | None
    reward_path: Path
    num_train: int
    num_val: int


def verl_schema():
    """The pyarrow schema of verl's RL rows (module doc)."""
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema(
        [
            ("data_source", pa.string()),
            ("prompt", pa.list_(message)),
            ("ability", pa.string()),
            ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
            ("extra_info", pa.struct([("split", pa.string()), ("index", pa.int64())])),
        ]
    )


def to_verl_rows(
    prompts: Sequence[RLPrompt], *, split: str, data_source: str = DEFAULT_DATA_SOURCE
) -> list[dict]:
    """verl rows for prompts that have a gold answer (the others are skipped with a warning)."""
    rows = []
    for i, p in enumerate(x for x in prompts if x.answer):
        rows.append(
            {
                "data_source": data_source,
                "prompt": [{"role": m["role"], "content": m["content"]} for m in p.messages],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": p.answer},
                "extra_info": {"split": split, "index": i},
            }
        )
    if len(rows) < len(prompts):
        logger.warning(
            "%d prompts without a gold answer left out of the %s split", len(prompts) - len(rows), split
        )
    return rows


def write_verl_parquet(rows: list[dict], path: str | Path) -> Path:
    """Write verl rows to ``path`` atomically, with :func:`verl_schema`."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    if not rows:
        raise UserError(f"no prompts with a gold answer to write to {path}")
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=verl_schema()), buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def export_verl(
    prompts: Sequence[RLPrompt],
    output_dir: str | Path,
    *,
    val_fraction: float = 0.0,
    val_prompts: Sequence[RLPrompt] | None = None,
    data_source: str = DEFAULT_DATA_SOURCE,
    seed: int = 0,
    run: RunSpec | None = None,
    overwrite: bool = False,
    wait: bool = False,
    reward: str = "math",
) -> VerlExport:
    """Write ``train.parquet``, ``validation.parquet`` and ``reward.py`` for verl into ``output_dir``.

    The validation split is ``val_prompts`` when given, else a ``val_fraction`` share of ``prompts``
    drawn with ``seed`` (and removed from training); with neither, no validation file is written.
    ``output_dir`` is a run folder (:mod:`sedsft.runs`): an export with other prompts or options is
    refused there, unless ``overwrite`` (``wait``: wait for another process using it); ``run`` adds the
    caller's settings and input files. ``reward`` (a name of ``sedsft.rl.rewards.REWARDS``) is the score
    ``reward.py`` computes by default.
    """
    check_number("val_fraction", val_fraction, low=0, high=1, open_high=True)
    if val_prompts is not None and val_fraction > 0:
        raise UserError("pass either val_prompts (--val_data) or val_fraction, not both")
    out = Path(output_dir)
    check_choice("reward", reward, tuple(REWARDS))
    settings = {
        "reward": reward,
        "val_fraction": val_fraction,
        "data_source": data_source,
        "seed": seed,
        "prompts": digest([[p.messages, p.answer] for p in prompts]),
        "val_prompts": digest([[p.messages, p.answer] for p in val_prompts])
        if val_prompts is not None
        else None,
    }
    open_run(out, (run or RunSpec("export-verl")).extended(settings=settings), overwrite=overwrite, wait=wait)
    train, val = list(prompts), list(val_prompts or [])
    if val_fraction > 0:
        num_val = max(1, round(val_fraction * len(train)))
        if num_val >= len(train):
            raise UserError(f"val_fraction {val_fraction} leaves no training prompts out of {len(train)}")
        picked = set(random.Random(seed).sample(range(len(train)), num_val))
        val = [p for i, p in enumerate(train) if i in picked]
        train = [p for i, p in enumerate(train) if i not in picked]
    train_rows = to_verl_rows(train, split="train", data_source=data_source)
    train_path = write_verl_parquet(train_rows, out / "train.parquet")
    val_path, num_val_rows = None, 0
    if val:
        val_rows = to_verl_rows(val, split="validation", data_source=data_source)
        val_path = write_verl_parquet(val_rows, out / "validation.parquet")
        num_val_rows = len(val_rows)
    reward_path = atomic_write_bytes(out / "reward.py", reward_module(reward).encode())
    return VerlExport(train_path, val_path, reward_path, len(train_rows), num_val_rows)


def reward_module(reward: str) -> str:
    """The text of ``sedsft.rl.verl_reward`` with ``REWARD`` set to ``reward``."""
    text = Path(__file__).with_name("verl_reward.py").read_text()
    line = 'REWARD = "math"'
    assert text.count(line) == 1, "verl_reward.py must set REWARD on one line"
    return text.replace(line, f'REWARD = "{reward}"')
