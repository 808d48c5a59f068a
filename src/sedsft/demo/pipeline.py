"""The demo pipeline: base model -> tau and Fig. 3 -> SFT per objective -> filter -> GRPO -> evaluation.

Every stage goes through the public code paths a GPU user runs: :class:`~sedsft.train.SEDSFTTrainer`
(which calibrates tau itself for SED-SFT), :func:`~sedsft.rl.filter_prompts`, :func:`~sedsft.rl.run_grpo`,
:func:`~sedsft.eval.runner.evaluate` and the analysis API. Stages, in order:

0. ``base``: the pre-trained base model (:mod:`sedsft.demo.base_model`), cached by config hash.
1. ``analysis``: Fig. 3 (top-k exploration space) on the base model over the SFT data, tau for (k, r).
2. ``sft/<objective>/s<seed>``: SFT on single-strategy solutions, the same hyper-parameters for all.
3. ``filter``: the base model samples ``filter_n`` answers per RL prompt; prompts with a solve rate in
   (0, 1) are kept, ONCE, and every objective's GRPO trains on that same set (the paper filtered offline
   once too). ``rl/<objective>/s<seed>``: GRPO from each SFT checkpoint with the same budget.
4. ``eval/<phase>/<objective>/s<seed>``: Avg@k at temperature 0.7 on the hard splits, one sample at
   temperature 1.0 elsewhere; Self-BLEU and strategy coverage.

Resumable: a stage that finishes writes ``stages/<key>.json`` atomically (its numbers and seconds); a
rerun of the same command reads those back instead of redoing the stage. The evaluation also resumes
inside a stage from its ``samples.jsonl``. ``--seeds N`` repeats stages 2-4 with seeds 0..N-1 (the base
model, the problem sets and the filtered RL set are shared, as the paper's single base model is).
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from sedsft.demo.config import DemoConfig
from sedsft.demo.tokenizer import DEMO_SYSTEM_PROMPT
from sedsft.demo.world import (
    SPLITS,
    build_eval_problems,
    build_rl_prompts,
    build_sft_set,
    classify_strategy,
    problem_record,
    write_eval_problems,
    write_rl_prompts,
    write_sft_jsonl,
)
from sedsft.errors import UserError
from sedsft.io import JsonlLog, atomic_write_json, read_json

STAGES_DIR = "stages"


@dataclass
class DemoResult:
    """What :func:`run_demo` produced: the report, the results and the stage keys this call computed."""

    output_dir: Path
    report_path: Path
    results_path: Path
    results: dict
    table: str  # Table 1 as Markdown, for the terminal
    computed: list[str]
    reused: list[str]


def default_cache_dir() -> Path:
    """``$SEDSFT_CACHE`` if set, else ``~/.cache/sedsft`` (base models live in ``<cache>/demo-base``)."""
    env = os.environ.get("SEDSFT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "sedsft"


def versions() -> dict[str, str]:
    import torch
    import transformers
    import trl

    import sedsft

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "sedsft": sedsft.__version__,
    }


# --- stage bookkeeping ---------------------------------------------------------------------------


class _Stages:
    """Runs a stage unless its marker exists; keeps the seconds of every stage, computed or read back."""

    def __init__(self, output_dir: Path, bar):
        self.dir = output_dir / STAGES_DIR
        self.bar = bar
        self.computed: list[str] = []
        self.reused: list[str] = []
        self.seconds: dict[str, float] = {}

    def marker(self, key: str) -> Path:
        return self.dir / (key.replace("/", "__") + ".json")

    def run(self, key: str, fn) -> dict:
        path = self.marker(key)
        if self.bar is not None:
            self.bar.set_description(f"demo: {key}")
        if path.exists():
            info = read_json(path)
            self.reused.append(key)
        else:
            start = time.perf_counter()
            info = dict(fn() or {})
            info["seconds"] = round(time.perf_counter() - start, 2)
            atomic_write_json(path, info)  # the stage is done only once this file exists
            self.computed.append(key)
        self.seconds[key] = info["seconds"]
        if self.bar is not None:
            self.bar.update(1)
        return info


def _trainer_bar(total: int, desc: str, enabled: bool):
    """A TrainerCallback showing one progress bar over a training stage's optimizer steps."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class _Bar(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.bar = tqdm(total=total, desc=desc, unit="step", leave=False, disable=not enabled)

        def on_step_end(self, args, state, control, **kw):
            self.bar.update(1)

        def on_train_end(self, args, state, control, **kw):
            self.bar.close()

    return _Bar()


@contextlib.contextmanager
def _quiet(log_path: Path):
    """Send a trainer's printed log lines to ``log_path`` (the numbers are in its metrics files)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as f, contextlib.redirect_stdout(f):
        yield


def _load(model_dir: str | Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32").eval()
    return model, AutoTokenizer.from_pretrained(model_dir)


# --- data ----------------------------------------------------------------------------------------


@dataclass
class DemoData:
    sft_records: list[dict]
    rl_records: list[dict]
    eval_problems: dict[str, list]  # split -> sedsft.eval Problem
    world_problems: dict[str, object]  # problem id -> world Problem (for strategy classification)


def build_data(cfg: DemoConfig, data_dir: Path | None = None) -> DemoData:
    """The demo's problem sets (deterministic from ``cfg.data_seed``), written to ``data_dir`` if given."""
    from sedsft.eval.benchmarks import Problem as EvalProblem

    sft = build_sft_set(n_per_split=cfg.sft_per_split, seed=cfg.data_seed)
    rl = build_rl_prompts(n_per_split=cfg.rl_per_split, seed=cfg.data_seed)
    ev = build_eval_problems(n_per_split=cfg.eval_per_split, seed=cfg.data_seed)
    if data_dir is not None:
        write_sft_jsonl(data_dir / "sft.jsonl", sft)
        write_rl_prompts(data_dir / "rl_prompts.jsonl", rl)
        write_eval_problems(data_dir / "eval.jsonl", ev)
    sft_records = [
        {"id": e.problem.id, "question": e.problem.question, "response": e.response, "split": e.problem.split}
        for e in sft
    ]
    by_split: dict[str, list] = {s: [] for s in SPLITS}
    for p in ev:
        by_split[p.split].append(
            EvalProblem(id=p.id, question=p.question, answer=p.answer, benchmark=p.split)
        )
    world = {p.id: p for p in ev}
    return DemoData(sft_records, [problem_record(p) for p in rl], by_split, world)


# --- stages ----------------------------------------------------------------------------------------


def stage_analysis(cfg: DemoConfig, base_dir: Path, data: DemoData, out: Path) -> dict:
    """Fig. 3 on the base model (top-k mass over the SFT data) and tau for the configured (k, r)."""
    from sedsft.analysis import analyze_topk

    model, tok = _load(base_dir)
    report = analyze_topk(
        model,
        tok,
        data.sft_records,
        max_k=10,
        mask_ratios=(0.5, cfg.mask_ratio, 0.9),
        num_examples=cfg.analysis_examples,
        seed=cfg.data_seed,
        batch_size=32,
        system_prompt=DEMO_SYSTEM_PROMPT,
        output_dir=out,
        meta={"model": "base", "data": "demo SFT set"},
    )
    return {
        "tau": report.tau(top_k=cfg.top_k, mask_ratio=cfg.mask_ratio),
        "top_k": cfg.top_k,
        "mask_ratio": cfg.mask_ratio,
        "summary": report.summary,
        "taus": report.taus,
        "figure": str(report.files.get("figure", "")),
    }


def stage_sft(
    cfg: DemoConfig, base_dir: Path, data: DemoData, objective: str, seed: int, out: Path, *, progress: bool
) -> dict:
    """SFT of the base model with ``objective`` through :class:`SEDSFTTrainer`; the model is saved in ``out``."""
    from sedsft.train import SEDSFTConfig, SEDSFTTrainer

    own = {}
    if objective == "sed":
        own = dict(top_k=cfg.top_k, mask_ratio=cfg.mask_ratio, lam=cfg.lam)
    elif objective == "sed_nomask":
        own = dict(lam=cfg.lam)
    args = SEDSFTConfig(
        output_dir=str(out),
        objective=objective,
        **own,
        max_steps=cfg.sft_steps,
        per_device_train_batch_size=cfg.sft_batch_size,
        gradient_accumulation_steps=1,
        learning_rate=cfg.sft_lr,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, cfg.sft_steps // 10),
        weight_decay=0.0,
        logging_steps=cfg.sft_logging_steps,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        seed=seed,
        data_seed=seed,
        disable_tqdm=True,
        system_prompt=DEMO_SYSTEM_PROMPT,
        max_length=256,
        calibration_examples=cfg.calibration_examples,
        dataloader_num_workers=0,
        activation_checkpointing=False,  # TRL turns it on by default: only slower for a tiny model
    )
    model, tok = _load(base_dir)
    with _quiet(out / "train.log"):
        trainer = SEDSFTTrainer(
            model,
            args,
            train_dataset=[{"question": r["question"], "response": r["response"]} for r in data.sft_records],
            processing_class=tok,
        )
        trainer.add_callback(_trainer_bar(cfg.sft_steps, f"SFT {objective} s{seed}", progress))
        trainer.train()
        trainer.save_model(str(out))
    return {"objective": objective, "seed": seed, "model_dir": str(out), "tau": trainer.tau}


def stage_filter(cfg: DemoConfig, base_dir: Path, data: DemoData, out: Path) -> dict:
    """Offline difficulty filtering with the base model; the kept prompts are shared by every objective."""
    from sedsft.eval.generation import HFBackend
    from sedsft.rl import filter_prompts, rl_prompts_from_records
    from sedsft.rl.filter import FilterConfig

    model, tok = _load(base_dir)
    prompts = rl_prompts_from_records(data.rl_records, system_prompt=DEMO_SYSTEM_PROMPT, source="rl_prompts")
    fcfg = FilterConfig(
        n=cfg.filter_n,
        temperature=1.0,
        top_p=1.0,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.data_seed,
        batch_prompts=max(1, cfg.gen_batch_size // cfg.filter_n),
    )
    res = filter_prompts(
        prompts,
        HFBackend(model, tok, batch_size=cfg.gen_batch_size, compute_entropy=False),
        config=fcfg,
        log_path=out / "solve_rates.jsonl",
    )
    kept = [data.rl_records[i] for i in res.kept]
    fallback = not kept
    atomic_write_json(out / "kept.json", kept if kept else data.rl_records)
    per_split = {
        s: {
            "candidates": sum(r["benchmark"] == s for r in data.rl_records),
            "kept": sum(r["benchmark"] == s for r in kept),
            "mean_solve_rate": _mean(
                [
                    rate
                    for r, rate in zip(data.rl_records, res.solve_rates)
                    if r["benchmark"] == s and rate is not None
                ]
            ),
        }
        for s in SPLITS
    }
    return {"summary": res.summary(), "per_split": per_split, "fallback_all_prompts": fallback}


def stage_grpo(
    cfg: DemoConfig, sft_dir: Path, kept: list[dict], seed: int, out: Path, *, desc: str, progress: bool
) -> dict:
    """GRPO from one SFT checkpoint on the shared filtered prompts, through :func:`run_grpo`."""
    from sedsft.rl import SEDGRPOConfig, rl_prompts_from_records, run_grpo

    prompts = rl_prompts_from_records(kept, system_prompt=DEMO_SYSTEM_PROMPT, source="kept")
    config = SEDGRPOConfig(
        output_dir=str(out),
        max_steps=cfg.rl_steps,
        per_device_train_batch_size=cfg.rl_prompts_per_step * cfg.num_generations,
        gradient_accumulation_steps=1,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_new_tokens,
        learning_rate=cfg.rl_lr,
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,  # TRL turns it on by default: only slower for a tiny model
        use_vllm=False,
        seed=seed,
        data_seed=seed,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
    )
    with _quiet(out / "train.log"):
        result = run_grpo(
            config,
            model=str(sft_dir),
            train_dataset=prompts,
            callbacks=(_trainer_bar(cfg.rl_steps, desc, progress),),
            resume="never",
        )
    rewards = [r["reward"] for r in result.log_history if "reward" in r]
    return {
        "model_dir": str(out),
        "global_step": result.global_step,
        "prompts": len(prompts),
        "reward_first": rewards[0] if rewards else None,
        "reward_last": rewards[-1] if rewards else None,
        "reward_mean": _mean(rewards),
    }


def stage_eval(cfg: DemoConfig, model_dir: Path, data: DemoData, seed: int, out: Path, *, name: str) -> dict:
    """The paper's protocol on the demo splits, plus strategy coverage from each response."""
    from sedsft.eval.generation import HFBackend, SamplingConfig
    from sedsft.eval.runner import evaluate

    model, tok = _load(model_dir)
    sampling = {
        s: SamplingConfig(
            temperature=cfg.hard_temperature if s in cfg.hard_splits else cfg.easy_temperature,
            top_p=1.0,
            max_new_tokens=cfg.max_new_tokens,
            n=cfg.hard_k if s in cfg.hard_splits else 1,
            seed=seed,
        )
        for s in SPLITS
    }
    res = evaluate(
        HFBackend(model, tok, batch_size=cfg.gen_batch_size),
        data.eval_problems,
        sampling=sampling,
        system_prompt=DEMO_SYSTEM_PROMPT,
        output_dir=out,
        batch_size=max(1, cfg.gen_batch_size // 2),
        run_name=name,
    )
    strategies = strategy_stats(res.records, data.world_problems)
    splits = {}
    for s, m in res.metrics.items():
        splits[s] = {
            "accuracy": m.accuracy,
            "num_samples": m.num_samples,
            "self_bleu": m.self_bleu,
            "mean_entropy": m.mean_entropy,
            **strategies[s],
        }
    return {"name": name, "seed": seed, "average": res.average, "splits": splits}


def strategy_stats(records: list[dict], world: dict) -> dict[str, dict]:
    """Per split: distinct strategies per problem (mean), share of each strategy, share following none."""
    by_problem: dict[tuple[str, str], list[str | None]] = defaultdict(list)
    for r in records:
        by_problem[(r["benchmark"], r["problem_id"])].append(
            classify_strategy(world[r["problem_id"]], r["response"])
        )
    out: dict[str, dict] = {}
    for split in SPLITS:
        groups = [kinds for (s, _), kinds in by_problem.items() if s == split]
        flat = [k for g in groups for k in g]
        if not flat:
            continue
        counts = Counter(flat)
        out[split] = {
            "coverage": _mean([len({k for k in g if k}) for g in groups]),
            "no_strategy": counts[None] / len(flat),
            "strategy_share": {k: counts[k] / len(flat) for k in sorted(k for k in counts if k)},
        }
    return out


def stage_heatmaps(cfg: DemoConfig, models: dict[str, Path], data: DemoData, tau: float, out: Path) -> dict:
    """Fig. 2: label probabilities of one hard SFT example under each model, masked with the same tau."""
    from sedsft.analysis import analyze_heatmap

    hard = [r for r in data.sft_records if r["split"] == cfg.hard_splits[-1]] or data.sft_records
    record = {"question": hard[0]["question"], "response": hard[0]["response"]}
    files = {}
    for name, path in models.items():
        model, tok = _load(path)
        hm = analyze_heatmap(
            model,
            tok,
            record,
            top_k=cfg.top_k,
            tau=tau,
            system_prompt=DEMO_SYSTEM_PROMPT,
            output_dir=out,
            name=f"heatmap_{name}",
            title=f"{name}: p(gold token) on {hard[0]['id']} (k={cfg.top_k}, tau={tau:.6f})",
        )
        probs = [t.prob for t in hm.tokens]
        files[name] = {"figure": str(hm.files["figure"]), "mean_gold_prob": _mean(probs)}
    return {"example": hard[0]["id"], "tau": tau, "models": files}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


# --- the whole run ---------------------------------------------------------------------------------


def _open_run(out: Path, cfg: DemoConfig, overwrite: bool) -> None:
    """The demo folder is a run folder (:mod:`sedsft.runs`) of these budgets; objectives and seeds may grow."""
    import json

    from sedsft.runs import RunSpec, open_run

    open_run(out, RunSpec("demo", settings=json.loads(cfg.fingerprint())), overwrite=overwrite)


def run_demo(
    cfg: DemoConfig,
    *,
    output_dir: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    seeds: int = 1,
    progress: bool = True,
    rl: bool = True,
    report: bool = True,
    overwrite: bool = False,
) -> DemoResult:
    """Run (or resume) every stage of the demo for ``cfg`` and write ``report.md`` and ``results.json``.

    ``output_dir`` holding a demo run with other budgets is refused, unless ``overwrite`` (start over).
    """
    from tqdm.auto import tqdm

    from sedsft.demo.base_model import build_base_model
    from sedsft.demo.report import write_report

    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    out = Path(output_dir)
    _open_run(out, cfg, overwrite)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    wall, started = time.perf_counter(), time.time()
    # base, data, analysis, base eval, heatmaps [+ filter] + per seed and objective: SFT, eval [+ RL, eval]
    n_stages = 5 + (1 if rl else 0) + seeds * len(cfg.objectives) * (4 if rl else 2)
    bar = tqdm(total=n_stages, desc="demo", unit="stage", disable=not progress)
    st = _Stages(out, bar)

    base_cached = (cache / "demo-base" / cfg.base.hash() / "base_config.json").exists()

    def _base():
        path = build_base_model(cfg.base, cache / "demo-base", progress=progress)
        log = read_json(path / "train_log.json")
        return {
            "path": str(path),
            "hash": cfg.base.hash(),
            "cached_before": base_cached,
            "train": {k: v for k, v in log.items() if k != "losses"},
        }

    base = st.run("base", _base)
    base_dir = Path(base["path"])
    if not (base_dir / "base_config.json").exists():  # the cache was cleared since: rebuild it
        base_dir = build_base_model(cfg.base, cache / "demo-base", progress=progress)
    data = build_data(cfg, out / "data")
    st.run(
        "data",
        lambda: {
            "sft": len(data.sft_records),
            "rl": len(data.rl_records),
            "eval": {s: len(v) for s, v in data.eval_problems.items()},
        },
    )
    analysis = st.run("analysis", lambda: stage_analysis(cfg, base_dir, data, out / "figures" / "topk"))
    evals: dict[str, dict] = {}
    evals["base/s0"] = st.run(
        "eval/base/s0", lambda: stage_eval(cfg, base_dir, data, 0, out / "eval" / "base" / "s0", name="base")
    )

    sft_info: dict[str, dict] = {}
    for seed in range(seeds):
        for obj in cfg.objectives:
            d = out / "sft" / obj / f"s{seed}"
            sft_info[f"{obj}/s{seed}"] = st.run(
                f"sft/{obj}/s{seed}", partial(stage_sft, cfg, base_dir, data, obj, seed, d, progress=progress)
            )
            evals[f"sft/{obj}/s{seed}"] = st.run(
                f"eval/sft/{obj}/s{seed}",
                partial(
                    stage_eval, cfg, d, data, seed, out / "eval" / "sft" / obj / f"s{seed}", name=f"{obj} SFT"
                ),
            )

    heat_models = {"base": base_dir}
    for obj in ("ce", "sed"):
        if obj in cfg.objectives:
            heat_models[f"{obj}_sft"] = out / "sft" / obj / "s0"
    sed_tau = sft_info.get("sed/s0", {}).get("tau")
    heat_tau = sed_tau if sed_tau is not None else analysis["tau"]
    heatmaps = st.run("heatmaps", partial(stage_heatmaps, cfg, heat_models, data, heat_tau, out / "figures"))

    filt, rl_info = None, {}
    if rl:
        filt = st.run("filter", partial(stage_filter, cfg, base_dir, data, out / "filter"))
        kept = read_json(out / "filter" / "kept.json")
        for seed in range(seeds):
            for obj in cfg.objectives:
                d = out / "rl" / obj / f"s{seed}"
                sft_dir = out / "sft" / obj / f"s{seed}"
                desc = f"GRPO {obj} s{seed}"
                rl_info[f"{obj}/s{seed}"] = st.run(
                    f"rl/{obj}/s{seed}",
                    partial(stage_grpo, cfg, sft_dir, kept, seed, d, desc=desc, progress=progress),
                )
                ev_dir = out / "eval" / "rl" / obj / f"s{seed}"
                evals[f"rl/{obj}/s{seed}"] = st.run(
                    f"eval/rl/{obj}/s{seed}",
                    partial(stage_eval, cfg, d, data, seed, ev_dir, name=f"{obj} SFT+RL"),
                )
    bar.close()
    # every invocation's measured wall time, kept across reruns (results.json shows them all)
    calls = JsonlLog(out / "calls.jsonl")
    calls.append(
        {
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(time.perf_counter() - wall, 1),
            "seeds": seeds,
            "objectives": list(cfg.objectives),
            "stages_computed": len(st.computed),
            "stages_reused": len(st.reused),
            "base_model_trained": "base" in st.computed and not base["cached_before"],
        }
    )

    results = {
        "config": cfg.to_dict(),
        "seeds": list(range(seeds)),
        "versions": versions(),
        "threads": _threads(),
        "base_model": base,
        "analysis": analysis,
        "calibration": {k: v.get("tau") for k, v in sft_info.items()},
        "filter": filt,
        "rl": rl_info,
        "heatmaps": heatmaps,
        "evals": evals,
        "stage_seconds": st.seconds,
        "computed_this_call": st.computed,
        "reused_this_call": st.reused,
        "wall_seconds_this_call": round(time.perf_counter() - wall, 1),
        "calls": calls.records(),
    }
    written = write_report(out, cfg, results) if report else None
    return DemoResult(
        output_dir=out,
        report_path=written.report if written else out / "report.md",
        results_path=written.results if written else out / "results.json",
        results=results,
        table=written.table if written else "",
        computed=st.computed,
        reused=st.reused,
    )


def _threads() -> dict:
    import torch

    return {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}


# --- the r/k sweep (sedsft sweep --pipeline demo) ----------------------------------------------------


def sweep_point(
    mask_ratio: float,
    top_k: int,
    *,
    output_dir: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    rl: bool = False,
    config: DemoConfig | None = None,
) -> dict[str, float]:
    """SED-SFT with masking ratio ``mask_ratio`` and ``top_k`` on the quick budget (optionally + GRPO),
    evaluated like the demo: ``{split: accuracy in [0, 1], ..., "avg": mean}`` of the last phase."""
    cfg = config or DemoConfig.quick()
    cfg = DemoConfig(
        **{
            **cfg.__dict__,
            "objectives": ("sed",),
            "mask_ratio": float(mask_ratio),
            "top_k": int(top_k),
            "name": f"sweep r={mask_ratio:g} k={top_k}",
        }
    )
    res = run_demo(cfg, output_dir=output_dir, cache_dir=cache_dir, progress=False, rl=rl, report=False)
    ev = res.results["evals"][("rl" if rl else "sft") + "/sed/s0"]
    out = {s: float(m["accuracy"]) for s, m in ev["splits"].items()}
    out["avg"] = float(ev["average"])
    return out
