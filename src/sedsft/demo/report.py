"""The demo's report: ``report.md`` (Table 1 and 2 analogues, strategy coverage, curves, figures) and
``results.json`` (every number, seeds, versions, stage times), both written atomically.

Numbers over several seeds are shown as mean +- standard deviation (sample std, n - 1); with one
seed only the value. Accuracy and coverage come from the evaluation stage's per-sample records; the
curves from the trainers' own logs (``sedsft_metrics.jsonl`` for SFT, ``metrics.jsonl`` for GRPO).
Each figure's numbers are written next to it as CSV.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from sedsft.analysis.plots import new_figure, save_png
from sedsft.demo.config import DISPLAY, DemoConfig
from sedsft.demo.world import SPLITS, STRATEGIES
from sedsft.io import atomic_write_json, atomic_write_text, read_jsonl_records

SFT_CURVES = ("loss", "mask_rate", "entropy", "gold_prob")


@dataclass
class WrittenReport:
    report: Path
    results: Path
    table: str


def _stat(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
        "values": values,
    }


def _fmt(s: dict | None, scale: float = 100.0, digits: int = 1) -> str:
    if s is None:
        return "-"
    if s["n"] > 1:
        return f"{scale * s['mean']:.{digits}f} ± {scale * s['std']:.{digits}f}"
    return f"{scale * s['mean']:.{digits}f}"


def aggregate(cfg: DemoConfig, results: dict) -> dict:
    """Per phase and objective: accuracy / Self-BLEU / coverage per split as mean and std over seeds."""
    evals = results["evals"]
    table: dict = {}
    rows = [("base", "base")] + [(ph, o) for ph in ("sft", "rl") for o in cfg.objectives]
    for phase, obj in rows:
        if phase == "base":
            runs = [evals["base/s0"]]
        else:
            runs = [v for k, v in evals.items() if k.startswith(f"{phase}/{obj}/s")]
        if not runs:
            continue
        entry: dict = {"seeds": [r["seed"] for r in runs], "splits": {}}
        for split in SPLITS:
            ms = [r["splits"][split] for r in runs if split in r["splits"]]
            if not ms:
                continue
            bleus = [m["self_bleu"] for m in ms if m["self_bleu"] is not None]
            entry["splits"][split] = {
                "accuracy": _stat([m["accuracy"] for m in ms]),
                "self_bleu": _stat([b / 100.0 for b in bleus]) if bleus else None,  # stored as a fraction
                "coverage": _stat([m["coverage"] for m in ms]),
                "no_strategy": _stat([m["no_strategy"] for m in ms]),
                "strategy_share": {
                    s: statistics.fmean(m["strategy_share"].get(s, 0.0) for m in ms) for s in STRATEGIES
                },
            }
        entry["avg"] = _stat([r["average"] for r in runs])
        table[f"{phase}/{obj}"] = entry
    return table


def _label(key: str) -> str:
    phase, obj = key.split("/")
    return "base model" if phase == "base" else DISPLAY.get(obj, obj)


def table1(cfg: DemoConfig, agg: dict) -> str:
    splits = list(SPLITS)
    head = "| Model | " + " | ".join(splits) + " | Avg |"
    rule = "| --- |" + " ---: |" * (len(splits) + 1)
    lines = [head, rule]
    for block, title in (("base", None), ("sft", "**after SFT**"), ("rl", "**after SFT + GRPO**")):
        keys = [k for k in agg if k.startswith(block + "/")]
        if not keys:
            continue
        if title:
            lines.append(f"| {title} |" + " |" * (len(splits) + 1))
        for k in keys:
            cells = [_fmt(agg[k]["splits"].get(s, {}).get("accuracy")) for s in splits]
            lines.append(f"| {_label(k)} | " + " | ".join(cells) + f" | {_fmt(agg[k]['avg'])} |")
    return "\n".join(lines)


def table2(cfg: DemoConfig, agg: dict) -> str:
    splits = [s for s in SPLITS if s in cfg.hard_splits]
    lines = ["| Model | " + " | ".join(splits) + " | Avg |", "| --- |" + " ---: |" * (len(splits) + 1)]
    for k, e in agg.items():
        cells = [e["splits"].get(s, {}).get("self_bleu") for s in splits]
        known = [c["mean"] for c in cells if c]
        avg = f"{100 * statistics.fmean(known):.1f}" if known else "-"
        phase = {"base": "", "sft": " (SFT)", "rl": " (SFT+RL)"}[k.split("/")[0]]
        lines.append(f"| {_label(k)}{phase} | " + " | ".join(_fmt(c) for c in cells) + f" | {avg} |")
    return "\n".join(lines)


def coverage_table(cfg: DemoConfig, agg: dict) -> str:
    splits = [s for s in SPLITS if s in cfg.hard_splits]
    head = (
        ["Model"]
        + [f"{s} strategies/problem" for s in splits]
        + [f"{s} {st}" for s in splits for st in (*STRATEGIES, "none")]
    )
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for k, e in agg.items():
        cells = [_fmt(e["splits"][s]["coverage"], scale=1.0, digits=2) for s in splits if s in e["splits"]]
        for s in splits:
            if s not in e["splits"]:
                continue
            share = e["splits"][s]["strategy_share"]
            cells += [f"{100 * share[st]:.0f}%" for st in STRATEGIES]
            cells.append(f"{100 * e['splits'][s]['no_strategy']['mean']:.0f}%")
        phase = {"base": "", "sft": " (SFT)", "rl": " (SFT+RL)"}[k.split("/")[0]]
        lines.append(f"| {_label(k)}{phase} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _csv(rows: list[dict]) -> str:
    if not rows:
        return ""
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def plot_sft_curves(out: Path, cfg: DemoConfig) -> Path | None:
    """Loss, mask rate, entropy and gold-token probability per SFT step, one line per objective (seed 0)."""
    rows = []
    for obj in cfg.objectives:
        path = out / "sft" / obj / "s0" / "sedsft_metrics.jsonl"
        if path.exists():
            for r in read_jsonl_records(path):
                if "loss" in r:
                    rows.append({"objective": obj, "step": r["step"], **{m: r.get(m) for m in SFT_CURVES}})
    if not rows:
        return None
    atomic_write_text(out / "figures" / "sft_curves.csv", _csv(rows))
    fig = new_figure(12, 3.2)
    axes = fig.subplots(1, len(SFT_CURVES))
    units = {
        "loss": "training loss (nats/token)",
        "mask_rate": "share of tokens penalised (P_topk < tau)",
        "entropy": "entropy (nats)",
        "gold_prob": "p(gold token)",
    }
    for ax, m in zip(axes, SFT_CURVES):
        for obj in cfg.objectives:
            pts = [(r["step"], r[m]) for r in rows if r["objective"] == obj and r[m] is not None]
            if pts:
                ax.plot(*zip(*pts), label=DISPLAY.get(obj, obj), marker=".")
        ax.set_xlabel("SFT optimizer step")
        ax.set_ylabel(units[m])
        ax.set_title(m)
    axes[0].legend(fontsize=7)
    fig.suptitle("SFT training curves (seed 0; trainer's sedsft_metrics.jsonl)")
    return save_png(fig, out / "figures" / "sft_curves.png")


def plot_rl_curves(out: Path, cfg: DemoConfig) -> Path | None:
    """Mean GRPO reward per step, one line per objective (seed 0)."""
    rows = []
    for obj in cfg.objectives:
        path = out / "rl" / obj / "s0" / "metrics.jsonl"
        if path.exists():
            for r in read_jsonl_records(path):
                if "reward" in r:
                    rows.append(
                        {
                            "objective": obj,
                            "step": r.get("step"),
                            "reward": r["reward"],
                            "reward_std": r.get("reward_std"),
                            "entropy": r.get("entropy"),
                        }
                    )
    if not rows:
        return None
    atomic_write_text(out / "figures" / "rl_curves.csv", _csv(rows))
    fig = new_figure(8, 3.2)
    axes = fig.subplots(1, 2)
    for ax, m, unit in (
        (axes[0], "reward", "mean reward (share correct)"),
        (axes[1], "entropy", "entropy (nats)"),
    ):
        for obj in cfg.objectives:
            pts = [
                (i + 1 if r["step"] is None else r["step"], r[m])
                for i, r in enumerate(x for x in rows if x["objective"] == obj)
                if r[m] is not None
            ]
            if pts:
                ax.plot(*zip(*pts), label=DISPLAY.get(obj, obj), marker=".")
        ax.set_xlabel("GRPO step")
        ax.set_ylabel(unit)
        ax.set_title(f"GRPO {m}")
    axes[0].legend(fontsize=7)
    fig.suptitle("GRPO on the shared filtered prompts (seed 0; trainer's metrics.jsonl)")
    return save_png(fig, out / "figures" / "rl_curves.png")


def _verdict(cfg: DemoConfig, agg: dict, seeds: int) -> str:
    """A plain statement of who won, computed from the table (never written by hand)."""
    lines = []
    for phase, name in (("sft", "after SFT"), ("rl", "after SFT + GRPO")):
        avgs = {k.split("/")[1]: agg[k]["avg"] for k in agg if k.startswith(phase + "/")}
        if len(avgs) < 2:
            continue
        ranked = sorted(avgs, key=lambda o: -avgs[o]["mean"])
        best = ranked[0]
        order = " > ".join(f"{DISPLAY.get(o, o)} {100 * avgs[o]['mean']:.1f}" for o in ranked)
        line = f"- {name}, average accuracy: {order}."
        if "sed" in avgs and "ce" in avgs:
            d = avgs["sed"]["mean"] - avgs["ce"]["mean"]
            spread = max(avgs["sed"]["std"], avgs["ce"]["std"])
            if d == 0:
                line += " SED-SFT ties CE"
            else:
                line += f" SED-SFT is {abs(100 * d):.1f} points {'higher' if d > 0 else 'lower'} than CE"
            if seeds > 1:
                line += f" (seed std up to {100 * spread:.1f} points"
                line += "; the gap is within the noise)" if abs(d) <= spread else ")"
            else:
                line += " (one seed: no error bar; rerun with --seeds 3 before reading much into a small gap)"
            line += "."
        top = [o for o in ranked if avgs[o]["mean"] == avgs[best]["mean"]]
        if "sed" in avgs and "sed" not in top:
            line += f" SED-SFT does not come out on top here; {DISPLAY.get(best, best)} does."
        elif "sed" in top and len(top) > 1:
            line += (
                " SED-SFT shares the top score with "
                + ", ".join(DISPLAY.get(o, o) for o in top if o != "sed")
                + "."
            )
        lines.append(line)
    return "\n".join(lines)


def write_report(out: Path, cfg: DemoConfig, results: dict) -> WrittenReport:
    agg = aggregate(cfg, results)
    results = {**results, "table": agg}
    figs = {"sft_curves": plot_sft_curves(out, cfg), "rl_curves": plot_rl_curves(out, cfg)}
    results["figures"] = {k: str(v.relative_to(out)) for k, v in figs.items() if v}
    t1 = table1(cfg, agg)
    seeds = len(results["seeds"])
    base = results["base_model"]["train"]
    filt = results.get("filter")
    hard = ", ".join(cfg.hard_splits)
    st = results["stage_seconds"]
    md = [
        f"# SED-SFT demo report ({cfg.name})",
        "",
        "A tiny Llama pre-trained on sums solved with four strategies, SFT'd on one strategy ('left') with "
        "each objective, then GRPO on prompts filtered once by the base model, then evaluated. "
        "Same hyper-parameters for every objective except its own; see docs/demo.md for the design.",
        "",
        f"Seeds: {results['seeds']} (mean ± std over seeds where more than one). Versions: "
        + ", ".join(f"{k} {v}" for k, v in results["versions"].items())
        + f". Wall time of the stages: {sum(st.values()):.0f} s (this call {results['wall_seconds_this_call']:.0f} s).",
        "",
        "Measured wall time of each invocation on this folder (`calls.jsonl`): "
        + "; ".join(
            f"{c['started_utc']} {c['seconds']:.0f} s ({c['stages_computed']} stages run, {c['stages_reused']} read back"
            + (", base model trained" if c["base_model_trained"] else "")
            + ")"
            for c in results.get("calls", [])
        )
        + ".",
        "",
        "## What the numbers say",
        "",
        _verdict(cfg, agg, seeds) or "- only one objective was run: nothing to compare.",
        "",
        f"## Table 1: accuracy (%), Avg@{cfg.hard_k} at T={cfg.hard_temperature} on {hard}, "
        f"one sample at T={cfg.easy_temperature} on the others; {cfg.eval_per_split} held-out problems per split",
        "",
        t1,
        "",
        f"## Table 2: Self-BLEU on {hard} ({cfg.hard_k} samples per problem; lower = more diverse)",
        "",
        table2(cfg, agg),
        "",
        f"## Strategy coverage on {hard}",
        "",
        "Distinct strategies among one problem's samples (mean over problems), and the share of samples "
        "using each strategy ('none': the response follows no strategy, e.g. a miscopied term).",
        "",
        coverage_table(cfg, agg),
        "",
        "## Stages",
        "",
        f"- Base model: {base['parameters']:,} parameters, {base['epochs']} epochs over {base['corpus_sequences']:,} "
        f"sequences, final loss {base['loss_last10']:.3f}, trained in {base['train_seconds']} s"
        + (" (read from the cache this time)" if results["base_model"]["cached_before"] else "")
        + f"; cache {results['base_model']['hash']}.",
        f"- tau (k={cfg.top_k}, r={cfg.mask_ratio}) on the base model over the SFT data: "
        f"{results['analysis']['tau']:.6f} (analysis sample); SED-SFT's own calibration: "
        + ", ".join(f"{k} {v:.6f}" for k, v in results["calibration"].items() if v is not None)
        + ".",
    ]
    if filt:
        s = filt["summary"]
        md.append(
            f"- Filter (base model, {cfg.filter_n} samples per prompt at T=1): kept {s['kept']} of {s['prompts']} "
            f"prompts ({s['always_solved']} always solved, {s['never_solved']} never solved); per split kept: "
            + ", ".join(f"{k} {v['kept']}/{v['candidates']}" for k, v in filt["per_split"].items())
            + "."
            + (
                " No prompt was kept, so GRPO trained on all candidates (zero-variance groups give no gradient)."
                if filt["fallback_all_prompts"]
                else ""
            )
        )
        md.append(
            f"- GRPO: {cfg.rl_steps} steps x {cfg.rl_prompts_per_step} prompts x {cfg.num_generations} samples, "
            f"lr {cfg.rl_lr}, for every objective."
        )
    md += [
        f"- SFT: {cfg.sft_steps} steps x {cfg.sft_batch_size} sequences, lr {cfg.sft_lr}, "
        f"{cfg.sft_per_split} problems per split (5 splits), one 'left' solution each.",
        "",
        "Seconds per stage: " + ", ".join(f"{k} {v:.0f}" for k, v in st.items()) + ".",
        "",
        "## Figures",
        "",
    ]
    fig_lines = [
        ("SFT training curves", results["figures"].get("sft_curves")),
        ("GRPO reward and entropy", results["figures"].get("rl_curves")),
        ("Fig. 3 analogue: top-k probability mass on the base model", "figures/topk/topk.png"),
    ]
    for name, info in results.get("heatmaps", {}).get("models", {}).items():
        fig_lines.append(
            (f"Fig. 2 analogue: label probabilities, {name}", str(Path(info["figure"]).relative_to(out)))
        )
    for title, rel in fig_lines:
        if rel and (out / rel).exists():
            md += [f"### {title}", "", f"![{title}]({rel})", ""]
    report = atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    results_path = atomic_write_json(out / "results.json", json.loads(json.dumps(results, default=str)))
    return WrittenReport(report=report, results=results_path, table=t1)
