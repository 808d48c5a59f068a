"""The demo's report: ``report.md`` and ``results.json`` (every number, seeds, versions, stage times).

:data:`SECTIONS` is the one list of report sections, in order; each is a small function of a
:class:`Report` (the config, the rows and the aggregated numbers) returning Markdown lines. Numbers
over several seeds are mean +- sample standard deviation (n - 1); with one seed only the value. Every
statement of who wins or whether something helps is computed from the numbers, never written by hand.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sedsft.demo.aggregate import aggregate, fmt, rl_gains
from sedsft.demo.config import DemoConfig, Variant
from sedsft.demo.figures import plot_rl_curves, plot_sft_curves
from sedsft.demo.world import SPLITS, STRATEGIES
from sedsft.io import atomic_write_json, atomic_write_text


@dataclass
class Report:
    out: Path
    cfg: DemoConfig
    rows: list[Variant]
    results: dict
    agg: dict
    gains: dict

    @property
    def hard(self) -> str:
        return "/".join(self.cfg.hard_splits)

    @property
    def n_seeds(self) -> int:
        return len(self.results["seeds"])


def _exceeds(s: dict | None) -> str:
    """'yes' when a mean gain is positive and larger than its seed-to-seed std, in words."""
    if s is None:
        return "not measured"
    if s["n"] < 2:
        return f"{100 * s['mean']:+.1f} points on one seed (no std: run more seeds to judge)"
    verdict = "larger than" if s["mean"] > s["std"] else "NOT larger than"
    return f"{100 * s['mean']:+.1f} ± {100 * s['std']:.1f} points over seeds {verdict} its std"


# --- sections ------------------------------------------------------------------------------------------


def sec_header(r: Report) -> list[str]:
    res = r.results
    calls = "; ".join(
        f"{c['started_utc']} {c['seconds']:.0f} s ({c['stages_computed']} stages run, {c['stages_reused']} read back)"
        for c in res.get("calls", [])
    )
    return [
        f"# SED-SFT demo report ({r.cfg.name})",
        "",
        "A tiny Llama pre-trained on sums solved with four strategies, SFT'd on one strategy ('left') with "
        f"each row ({', '.join(v.label for v in r.rows)}), then GRPO on prompts filtered once by the base "
        "model, then evaluated. The same hyper-parameters for every row; each objective's own options at the "
        "paper's defaults (lambda excepted in the ablation rows). See docs/demo.md for the design.",
        "",
        f"Seeds: {res['seeds']} (mean ± std over seeds where more than one). Versions: "
        + ", ".join(f"{k} {v}" for k, v in res["versions"].items())
        + (
            f". Stages ran in {res['calls'][-1]['jobs']} worker process(es), {res['calls'][-1]['threads']} torch "
            "thread(s) each."
            if res.get("calls")
            else "."
        ),
        "",
        f"Measured wall time of each invocation on this folder (`calls.jsonl`): {calls}.",
    ]


def sec_verdict(r: Report) -> list[str]:
    lines = ["## What the numbers say", ""]
    for phase, name in (("sft", "after SFT"), ("rl", "after SFT + GRPO")):
        avgs = {v: r.agg[f"{phase}/{v.key}"]["avg"] for v in r.rows if f"{phase}/{v.key}" in r.agg}
        if len(avgs) < 2:
            continue
        ranked = sorted(avgs, key=lambda v: -avgs[v]["mean"])
        line = f"- {name}, average accuracy: " + " > ".join(f"{v.label} {fmt(avgs[v])}" for v in ranked) + "."
        ce, sed = Variant("ce"), Variant("sed")
        if ce in avgs and sed in avgs:
            d = avgs[sed]["mean"] - avgs[ce]["mean"]
            spread = max(avgs[sed]["std"], avgs[ce]["std"])
            line += f" SED-SFT is {abs(100 * d):.1f} points {'above' if d > 0 else 'below'} CE"
            if r.n_seeds > 1:
                line += (
                    " (within the seed std)."
                    if abs(d) <= spread
                    else f" (seed std up to {100 * spread:.1f})."
                )
            else:
                line += " (one seed: no error bar)."
            line += "" if ranked[0] == sed else f" SED-SFT is not on top; {ranked[0].label} is."
        lines.append(line)
    return lines if len(lines) > 2 else lines + ["- only one row was run: nothing to compare."]


def sec_base(r: Report) -> list[str]:
    b, src = r.agg.get("base"), r.results["stages"]["base"]
    if b is None:
        return []
    h = b["hard"]
    return [
        "## The base model",
        "",
        f"{src['train']['parameters']:,} parameters, source: {src['source']} (config hash {src['hash']}; "
        f"{src['train']['epochs']} epochs over {src['train']['corpus_sequences']:,} sequences, final loss "
        f"{src['train']['loss_last10']:.3f}). On {r.hard}, {fmt(h['following'])}% of its samples follow one of the "
        f"four strategies ({fmt(h['coverage'], 1.0, 2)} distinct strategies per problem, tens "
        f"{fmt(h['tens'])}%); per split: "
        + ", ".join(
            f"{s} {100 * (1 - b['splits'][s]['no_strategy']['mean']):.0f}%" for s in r.cfg.hard_splits
        )
        + ".",
    ]


def sec_table1(r: Report) -> list[str]:
    c = r.cfg
    lines = [
        f"## Table 1: accuracy (%), Avg@{c.hard_k} at T={c.hard_temperature} on {r.hard}, one sample at "
        f"T={c.easy_temperature} on the others; {c.eval_per_split} held-out problems per split",
        "",
        "| Model | " + " | ".join(SPLITS) + " | Avg |",
        "| --- |" + " ---: |" * (len(SPLITS) + 1),
    ]
    for block, title in (("base", None), ("sft", "**after SFT**"), ("rl", "**after SFT + GRPO**")):
        keys = [k for k in r.agg if k == block or k.startswith(block + "/")]
        if keys and title:
            lines.append(f"| {title} |" + " |" * (len(SPLITS) + 1))
        for k in keys:
            e = r.agg[k]
            cells = [fmt(e["splits"].get(s, {}).get("accuracy")) for s in SPLITS]
            lines.append(f"| {e['label']} | " + " | ".join(cells) + f" | {fmt(e['avg'])} |")
    return lines


def _phase(k: str) -> str:
    return {"base": "", "sft": " (SFT)", "rl": " (SFT+RL)"}[k.split("/")[0]]


def sec_diversity(r: Report) -> list[str]:
    hard = list(r.cfg.hard_splits)
    head = ["Model", *(f"{s} Self-BLEU" for s in hard), *(f"{s} strategies/problem" for s in hard)]
    head += [f"{s} {x}" for s in hard for x in (*STRATEGIES, "none")]
    lines = [
        f"## Table 2 and strategy coverage on {r.hard}",
        "",
        f"Self-BLEU of the {r.cfg.hard_k} samples per problem (lower = more diverse), distinct strategies among "
        "them (mean over problems), and the share of samples using each strategy ('none': no strategy fits, "
        "e.g. a miscopied term).",
        "",
        "| " + " | ".join(head) + " |",
        "| --- |" + " ---: |" * (len(head) - 1),
    ]
    for k, e in r.agg.items():
        sp = e["splits"]
        cells = [fmt(sp[s]["self_bleu"]) for s in hard] + [fmt(sp[s]["coverage"], 1.0, 2) for s in hard]
        for s in hard:  # per split: each strategy's share, then the share following none
            cells += [f"{100 * sp[s]['share'][x]:.0f}%" for x in STRATEGIES]
            cells.append(f"{100 * sp[s]['no_strategy']['mean']:.0f}%")
        lines.append(f"| {e['label']}{_phase(k)} | " + " | ".join(cells) + " |")
    return lines


def sec_lambda(r: Report) -> list[str]:
    lam_rows = r.cfg.lambda_rows()
    if len(lam_rows) < 2:
        return []
    measured = r.results["stages"].get("weights", {}).get("measured", {})
    lines = [
        f"## Lambda ablation: SED-SFT at lambda in {{{', '.join(f'{v.lam():g}' for v in lam_rows)}}}",
        "",
        f"Everything else at the paper's defaults. On {r.hard}: accuracy (%), Self-BLEU, distinct strategies per "
        f"problem and the share of `tens` (%), mean ± std over {r.n_seeds} seed(s); w = the measured mean gradient "
        "weight on penalised tokens and the share of them with w < 0 (trainer statistics, seed 0).",
        "",
        "| lambda | phase | accuracy | Self-BLEU | strategies/problem | tens | mean w (penalised) | w < 0 |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for v in lam_rows:
        m = measured.get(v.label, {})
        for phase in ("sft", "rl"):
            e = r.agg.get(f"{phase}/{v.key}")
            if e is None:
                continue
            h = e["hard"]
            w = (
                [f"{m['mask_weight']:.3f}", f"{100 * m['mask_neg_rate']:.1f}%"]
                if phase == "sft" and m.get("mask_weight") is not None
                else ["", ""]
            )
            cells = [fmt(h["accuracy"]), fmt(h["self_bleu"]), fmt(h["coverage"], 1.0, 2), fmt(h["tens"]), *w]
            lines.append(
                f"| {v.lam():g} | {'SFT' if phase == 'sft' else 'SFT+GRPO'} | " + " | ".join(cells) + " |"
            )
    return lines + [""] + _lambda_verdict(r, lam_rows)


def _compare(a: dict | None, b: dict | None) -> tuple[float, float] | None:
    if a is None or b is None:
        return None
    return b["mean"] - a["mean"], max(a["std"], b["std"])


def _lambda_verdict(r: Report, lam_rows: list[Variant]) -> list[str]:
    """Plain answers: does a larger lambda keep strategy diversity, and does that pay after RL?"""
    first, lines = lam_rows[0], []
    noise = "the seed std" if r.n_seeds > 1 else "(one seed: no std, treat as unresolved)"
    for v in lam_rows[1:]:
        parts = []
        for phase, metric, what, scale in (
            ("sft", "coverage", "strategies per problem after SFT", 1.0),
            ("sft", "tens", "share of tens after SFT", 100.0),
            ("rl", "tens", "share of tens after GRPO", 100.0),
            ("rl", "accuracy", f"{r.hard} accuracy after GRPO", 100.0),
        ):
            c = _compare(
                r.agg.get(f"{phase}/{first.key}", {}).get("hard", {}).get(metric),
                r.agg.get(f"{phase}/{v.key}", {}).get("hard", {}).get(metric),
            )
            if c is None:
                continue
            d, sd = c
            beyond = r.n_seeds > 1 and abs(d) > sd
            parts.append(
                f"{what} {'+' if d >= 0 else '-'}{scale * abs(d):.2f}{'' if scale == 1 else ' points'} "
                + (f"(beyond {noise})" if beyond else f"(within {noise})" if r.n_seeds > 1 else noise)
            )
        if parts:
            lines.append(f"- lambda {v.lam():g} vs {first.lam():g}: " + "; ".join(parts) + ".")
    return lines


def sec_weights(r: Report) -> list[str]:
    w = r.results["stages"].get("weights")
    if not w:
        return []
    stars = ", ".join(
        f"lambda {k}: {'none (w >= 0 for every p < 1)' if p is None else f'p* = {p:.3f}'}"
        for k, p in w["stationary_points"].items()
    )
    return [
        "## Effective gradient weights",
        "",
        "On a penalised token SED-SFT's logit gradient is CE's times w(p) = 1 - 2 lambda p (p - 1/2); DFT's is "
        "CE's times p; GEM's gold-logit component (two outcomes) equals CE's times (1 - q)/(1 - p), q the "
        "tempered probability. w < 0 lowers p: SED-SFT holds p at the stationary point p* only where lambda > 1. "
        f"Stationary points: {stars}.",
        "",
        w["table"].strip(),
        "",
        f"![w(p) and the measured w]({w['figure']})",
    ]


def sec_rl(r: Report) -> list[str]:
    if not r.gains:
        return []
    c = r.cfg
    lines = [
        "## What GRPO adds",
        "",
        f"One budget for every row: {c.rl_steps} steps x {c.rl_prompts_per_step} prompts x {c.num_generations} "
        f"samples, lr {c.rl_lr:g}, KL beta {c.rl_beta:g}. Reward gain: the mean reward of the last quarter of the "
        f"GRPO steps minus that of the first quarter; {r.hard} gain: held-out accuracy after GRPO minus after "
        "SFT, paired by seed.",
        "",
        f"| Model | reward gain | {r.hard} accuracy gain |",
        "| --- | ---: | ---: |",
    ]
    for g in r.gains.values():
        lines.append(f"| {g['label']} | {fmt(g['reward_gain'])} | {fmt(g['hard_accuracy_gain'])} |")
    ce = r.gains.get("ce")
    if ce:
        lines += [
            "",
            f"- CE's reward gain: {_exceeds(ce['reward_gain'])}; its {r.hard} accuracy gain: "
            f"{_exceeds(ce['hard_accuracy_gain'])}.",
        ]
    if "rl_curves" in r.results.get("figures", {}):
        lines += ["", f"![GRPO reward and entropy]({r.results['figures']['rl_curves']})"]
    return lines


def sec_stages(r: Report) -> list[str]:
    s, c = r.results["stages"], r.cfg
    cal = [
        f"{k.split('/')[1]} {v['tau']:.6f}"
        for k, v in s.items()
        if k.startswith("sft/") and k.endswith("/s0") and v.get("tau") is not None
    ]
    lines = [
        "## Stages",
        "",
        f"- SFT: {c.sft_steps} steps x {c.sft_batch_size} sequences, lr {c.sft_lr:g}, {c.sft_per_split} problems per "
        "split (5 splits), one 'left' solution each.",
        f"- tau (k={s['analysis']['top_k']}, r={s['analysis']['mask_ratio']}) on the base model over the SFT data: "
        f"{s['analysis']['tau']:.6f}; SED-SFT's own calibrations (seed 0): {', '.join(cal) or 'none'}.",
    ]
    if "filter" in s:
        f = s["filter"]["summary"]
        lines.append(
            f"- Filter (base model, {c.filter_n} samples per prompt at T=1): kept {f['kept']} of {f['prompts']} prompts "
            f"({f['always_solved']} always solved, {f['never_solved']} never solved); per split: "
            + ", ".join(
                f"{k} {v['kept']}/{v['candidates']}"
                for k, v in s["filter"]["per_split"].items()
                if v["candidates"]
            )
            + "."
            + (
                " No prompt was kept, so GRPO trained on all candidates."
                if s["filter"]["fallback_all_prompts"]
                else ""
            )
        )
    kinds: dict[str, float] = {}
    for key, sec in r.results["stage_seconds"].items():
        kind = "eval" if key.startswith("eval/") else key.split("/")[0]
        kinds[kind] = kinds.get(kind, 0.0) + sec
    lines.append("- Seconds per kind of stage: " + ", ".join(f"{k} {v:.0f}" for k, v in kinds.items()) + ".")
    return lines


def sec_figures(r: Report) -> list[str]:
    figs = [
        ("SFT training curves", r.results["figures"].get("sft_curves")),
        ("Fig. 3 analogue: top-k probability mass on the base model", "figures/topk/topk.png"),
    ]
    for name, info in r.results["stages"].get("heatmaps", {}).get("models", {}).items():
        figs.append((f"Fig. 2 analogue: label probabilities, {name}", info["figure"]))
    lines = ["## Figures", ""]
    for title, rel in figs:
        if rel and (r.out / rel).exists():
            lines += [f"### {title}", "", f"![{title}]({rel})", ""]
    return lines


SECTIONS: list[Callable[[Report], list[str]]] = [
    sec_header,
    sec_verdict,
    sec_base,
    sec_table1,
    sec_diversity,
    sec_lambda,
    sec_weights,
    sec_rl,
    sec_stages,
    sec_figures,
]


@dataclass
class WrittenReport:
    report: Path
    results: Path
    table: str


def write_report(out: Path, cfg: DemoConfig, rows: list[Variant], results: dict) -> WrittenReport:
    agg = aggregate(cfg, rows, results)
    figs = {"sft_curves": plot_sft_curves(out, rows), "rl_curves": plot_rl_curves(out, rows, cfg.seeds)}
    results = {**results, "table": agg, "rl_gains": rl_gains(cfg, rows, results)}
    results["figures"] = {k: str(v.relative_to(out)) for k, v in figs.items() if v}
    r = Report(out, cfg, rows, results, agg, results["rl_gains"])
    text = "\n".join(line for section in SECTIONS for line in [*section(r), ""])
    report = atomic_write_text(out / "report.md", text)
    results_path = atomic_write_json(out / "results.json", json.loads(json.dumps(results, default=str)))
    return WrittenReport(report=report, results=results_path, table="\n".join(sec_table1(r)[2:]))
