"""The demo's numbers over seeds: per phase and row, accuracy, Self-BLEU and strategy coverage as mean
and sample standard deviation (n - 1), per split and over the hard splits, and GRPO's gains per row."""

from __future__ import annotations

import statistics
from collections.abc import Callable

from sedsft.demo.config import DemoConfig, Variant
from sedsft.demo.stages import eval_key, rl_key
from sedsft.demo.world import SPLITS, STRATEGIES


def stat(values: list[float]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": sd, "n": len(values), "values": values}


def fmt(s: dict | None, scale: float = 100.0, digits: int = 1) -> str:
    if s is None:
        return "-"
    if s["n"] > 1:
        return f"{scale * s['mean']:.{digits}f} ± {scale * s['std']:.{digits}f}"
    return f"{scale * s['mean']:.{digits}f}"


def _hard(run: dict, hard: tuple[str, ...], get: Callable[[dict], float | None]) -> float | None:
    vals = [get(run["splits"][s]) for s in hard if s in run["splits"]]
    vals = [v for v in vals if v is not None]
    return statistics.fmean(vals) if vals else None


def aggregate(cfg: DemoConfig, rows: list[Variant], results: dict) -> dict:
    """``base`` and ``<phase>/<row>``: per split and over the hard splits, mean/std over seeds."""
    stages, table = results["stages"], {}
    hard = cfg.hard_splits
    entries = [("base", None)] + [(ph, v) for ph in ("sft", "rl") for v in rows]
    for phase, v in entries:
        seeds = [0] if phase == "base" else results["seeds"]
        runs = [stages[k] for k in (eval_key(phase, v, s) for s in seeds) if k in stages]
        if not runs:
            continue
        splits = {}
        for split in SPLITS:
            ms = [r["splits"][split] for r in runs if split in r["splits"]]
            if ms:
                splits[split] = {
                    "accuracy": stat([m["accuracy"] for m in ms]),
                    "self_bleu": stat(
                        [m["self_bleu"] / 100 if m["self_bleu"] is not None else None for m in ms]
                    ),
                    "coverage": stat([m["coverage"] for m in ms]),
                    "no_strategy": stat([m["no_strategy"] for m in ms]),
                    "share": {
                        s: statistics.fmean(m["strategy_share"].get(s, 0.0) for m in ms) for s in STRATEGIES
                    },
                }
        table["base" if v is None else f"{phase}/{v.key}"] = {
            "label": "base model" if v is None else v.label,
            "seeds": [r["seed"] for r in runs],
            "splits": splits,
            "avg": stat([r["average"] for r in runs]),
            "hard": {
                "accuracy": stat([_hard(r, hard, lambda m: m["accuracy"]) for r in runs]),
                "self_bleu": stat(
                    [_hard(r, hard, lambda m: m["self_bleu"] and m["self_bleu"] / 100) for r in runs]
                ),
                "coverage": stat([_hard(r, hard, lambda m: m["coverage"]) for r in runs]),
                "following": stat([_hard(r, hard, lambda m: 1 - m["no_strategy"]) for r in runs]),
                "tens": stat([_hard(r, hard, lambda m: m["strategy_share"].get("tens", 0.0)) for r in runs]),
            },
        }
    return table


def rl_gains(cfg: DemoConfig, rows: list[Variant], results: dict) -> dict:
    """Per row: GRPO's reward rise (last quarter of steps minus first) and held-out hard-split gain, per seed."""
    stages, out = results["stages"], {}
    for v in rows:
        reward, acc = [], []
        for s in results["seeds"]:
            g, before, after = (
                stages.get(rl_key(v, s)),
                stages.get(eval_key("sft", v, s)),
                stages.get(eval_key("rl", v, s)),
            )
            if g and g.get("rewards"):
                q = max(1, len(g["rewards"]) // 4)
                reward.append(statistics.fmean(g["rewards"][-q:]) - statistics.fmean(g["rewards"][:q]))
            if before and after:
                hard = cfg.hard_splits
                acc.append(
                    _hard(after, hard, lambda m: m["accuracy"]) - _hard(before, hard, lambda m: m["accuracy"])
                )
        if reward or acc:
            out[v.key] = {"label": v.label, "reward_gain": stat(reward), "hard_accuracy_gain": stat(acc)}
    return out
