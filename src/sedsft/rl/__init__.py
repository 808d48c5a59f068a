"""The RL stage: GRPO with a verifiable math reward, offline difficulty filtering, export to verl.

Light names (rewards, prompts) import without TRL; the trainer, filter and verl export load on first use.

    from sedsft.rl import load_rl_prompts, run_grpo, SEDGRPOConfig, math_reward, filter_prompts
"""

from __future__ import annotations

import importlib

from sedsft.rl.prompts import RLPrompt, load_rl_prompts, rl_prompt, rl_prompts_from_records, to_dataset
from sedsft.rl.rewards import PooledMathReward, completion_text, math_reward, normalize_gold

_LAZY = {
    "SEDGRPOConfig": "sedsft.rl.config",
    "GRPOScriptArguments": "sedsft.rl.config",
    "SEDGRPOTrainer": "sedsft.rl.trainer",
    "GRPOResult": "sedsft.rl.trainer",
    "run_grpo": "sedsft.rl.trainer",
    "group_stats": "sedsft.rl.trainer",
    "FilterConfig": "sedsft.rl.filter",
    "FilterResult": "sedsft.rl.filter",
    "filter_prompts": "sedsft.rl.filter",
    "export_verl": "sedsft.rl.verl",
    "compute_score": "sedsft.rl.verl_reward",
}

__all__ = [
    "PooledMathReward",
    "RLPrompt",
    "completion_text",
    "load_rl_prompts",
    "math_reward",
    "normalize_gold",
    "rl_prompt",
    "rl_prompts_from_records",
    "to_dataset",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sedsft.rl' has no attribute {name!r}")
