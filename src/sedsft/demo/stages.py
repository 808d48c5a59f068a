"""The demo's stages, one small function each: ``stage_x(ctx, ...) -> dict`` of the stage's numbers.

Every stage goes through the public code paths a GPU user runs: :class:`~sedsft.train.SEDSFTTrainer`
(which calibrates tau itself for SED-SFT), :func:`~sedsft.rl.filter_prompts`, :func:`~sedsft.rl.run_grpo`,
:func:`~sedsft.eval.runner.evaluate`, the analysis API and :func:`sedsft.models.load_local_model`.
A stage reads what earlier stages left in :attr:`Context.done` and writes its files under the run
folder; :mod:`sedsft.demo.pipeline` decides the order and what is already done.
"""

from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from sedsft.demo.config import DemoConfig, Variant, registry_default
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
from sedsft.io import atomic_write_json, read_json

PHASES = ("base", "sft", "rl")  # which model an evaluation scores


def sft_key(v: Variant, seed: int) -> str:
    return f"sft/{v.key}/s{seed}"


def rl_key(v: Variant, seed: int) -> str:
    return f"rl/{v.key}/s{seed}"


def eval_key(phase: str, v: Variant | None, seed: int) -> str:
    return f"eval/{phase}/{v.key if v is not None else 'base'}/s{seed}"


@dataclass
class DemoData:
    sft_records: list[dict]
    rl_records: list[dict]
    eval_problems: dict[str, list]  # split -> sedsft.eval.benchmarks.Problem
    world_problems: dict[str, object]  # problem id -> SumsProblem (for strategy classification)


@dataclass
class Context:
    """One run: its config, folders, and the numbers of every stage finished so far (key -> dict)."""

    cfg: DemoConfig
    out: Path
    base_dir: Path
    progress: bool = True
    done: dict[str, dict] = field(default_factory=dict)

    def folder(self, key: str) -> Path:
        return self.out / key

    @cached_property
    def data(self) -> DemoData:
        return build_data(self.cfg)  # in memory: deterministic; the data stage writes the files


def build_data(cfg: DemoConfig, data_dir: Path | None = None) -> DemoData:
    """The demo's problem sets (deterministic from ``cfg.data_seed``), written to ``data_dir`` if given."""
    from sedsft.eval.benchmarks import Problem

    sft = build_sft_set(n_per_split=cfg.sft_per_split, seed=cfg.data_seed)
    rl = build_rl_prompts(n_per_split=cfg.rl_per_split, seed=cfg.data_seed, splits=cfg.rl_splits)
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
        by_split[p.split].append(Problem(id=p.id, question=p.question, answer=p.answer, benchmark=p.split))
    return DemoData(sft_records, [problem_record(p) for p in rl], by_split, {p.id: p for p in ev})


# --- helpers -----------------------------------------------------------------------------------------


def _load(model_dir: Path):
    from sedsft.models import load_local_model

    return load_local_model(model_dir, dtype="float32", device="cpu")


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


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


# --- the stages --------------------------------------------------------------------------------------


def stage_base(ctx: Context) -> dict:
    """The base model's identity and training log (the folder was resolved before the run opened)."""
    info = read_json(ctx.base_dir / "base_config.json")
    log = read_json(ctx.base_dir / "train_log.json")
    return {
        "path": str(ctx.base_dir),
        "hash": info["hash"],
        "source": info.get("source", "trained"),
        "train": {k: v for k, v in log.items() if k != "losses"},
    }


def stage_data(ctx: Context) -> dict:
    """The problem sets, written to ``data/`` (SFT set, RL prompts, evaluation problems) for reading."""
    d = build_data(ctx.cfg, ctx.out / "data")
    return {
        "sft": len(d.sft_records),
        "rl": len(d.rl_records),
        "eval": {s: len(v) for s, v in d.eval_problems.items()},
    }


def stage_analysis(ctx: Context) -> dict:
    """Fig. 3 on the base model (top-k mass over the SFT data) and tau at the paper's (k, r)."""
    from sedsft.analysis import analyze_topk
    from sedsft.calibrate import DEFAULT_MASK_RATIO

    top_k, r = registry_default("sed", "top_k"), DEFAULT_MASK_RATIO
    model, tok = _load(ctx.base_dir)
    report = analyze_topk(
        model,
        tok,
        ctx.data.sft_records,
        max_k=10,
        mask_ratios=sorted({0.5, r, 0.9}),
        num_examples=ctx.cfg.analysis_examples,
        seed=ctx.cfg.data_seed,
        batch_size=32,
        system_prompt=DEMO_SYSTEM_PROMPT,
        output_dir=ctx.out / "figures" / "topk",
        meta={"model": "base", "data": "demo SFT set"},
    )
    return {
        "tau": report.tau(top_k=top_k, mask_ratio=r),
        "top_k": top_k,
        "mask_ratio": r,
        "taus": report.taus,
    }


def stage_sft(ctx: Context, v: Variant, seed: int) -> dict:
    """SFT of the base model for row ``v`` through :class:`SEDSFTTrainer`; the model is saved in its folder."""
    from sedsft.train import SEDSFTConfig, SEDSFTTrainer
    from sedsft.train.config import option_fields

    cfg, out = ctx.cfg, ctx.folder(sft_key(v, seed))
    args = SEDSFTConfig(
        output_dir=str(out),
        objective=v.objective,
        **option_fields(dict(v.options)),  # the row's changes; every other option at the registry default
        **dict(v.train),
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
    model, tok = _load(ctx.base_dir)
    records = [{"question": r["question"], "response": r["response"]} for r in ctx.data.sft_records]
    with _quiet(out / "train.log"):
        trainer = SEDSFTTrainer(model, args, train_dataset=records, processing_class=tok)
        trainer.add_callback(_trainer_bar(cfg.sft_steps, f"SFT {v.key} s{seed}", ctx.progress))
        trainer.train()
        trainer.save_model(str(out))
    return {"variant": v.key, "seed": seed, "model_dir": str(out), "tau": trainer.tau}


def stage_eval(ctx: Context, phase: str, v: Variant | None, seed: int) -> dict:
    """The paper's protocol on the demo splits (Avg@k at T=0.7 on the hard ones, one sample at T=1
    elsewhere), plus strategy coverage from each response."""
    from sedsft.eval.generation import HFBackend, SamplingConfig
    from sedsft.eval.runner import evaluate

    cfg = ctx.cfg
    model_dir = (
        ctx.base_dir if phase == "base" else ctx.folder((sft_key if phase == "sft" else rl_key)(v, seed))
    )
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
    name = "base" if v is None else f"{v.key} {phase}"
    res = evaluate(
        HFBackend(model, tok, batch_size=cfg.gen_batch_size),
        ctx.data.eval_problems,
        sampling=sampling,
        system_prompt=DEMO_SYSTEM_PROMPT,
        output_dir=ctx.folder(eval_key(phase, v, seed)),
        batch_size=max(1, cfg.gen_batch_size // 2),
        run_name=name,
    )
    strategies = strategy_stats(res.records, ctx.data.world_problems)
    splits = {
        s: {
            "accuracy": m.accuracy,
            "num_samples": m.num_samples,
            "self_bleu": m.self_bleu,
            "mean_entropy": m.mean_entropy,
            **strategies[s],
        }
        for s, m in res.metrics.items()
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


def stage_heatmaps(ctx: Context) -> dict:
    """Fig. 2: label probabilities of one hard SFT example under the base, CE-SFT and SED-SFT models
    (seed 0), outlined where SED's penalty is active with SED's own tau."""
    from sedsft.analysis import analyze_heatmap

    models = {"base": ctx.base_dir}
    for v in (Variant("ce"), Variant("sed")):
        if sft_key(v, 0) in ctx.done:
            models[f"{v.key}_sft"] = ctx.folder(sft_key(v, 0))
    sed_tau = ctx.done.get(sft_key(Variant("sed"), 0), {}).get("tau")
    tau = sed_tau if sed_tau is not None else ctx.done["analysis"]["tau"]
    top_k = registry_default("sed", "top_k")
    hard = [r for r in ctx.data.sft_records if r["split"] == ctx.cfg.hard_splits[-1]] or ctx.data.sft_records
    record = {"question": hard[0]["question"], "response": hard[0]["response"]}
    files = {}
    for name, path in models.items():
        model, tok = _load(path)
        hm = analyze_heatmap(
            model,
            tok,
            record,
            top_k=top_k,
            tau=tau,
            system_prompt=DEMO_SYSTEM_PROMPT,
            output_dir=ctx.out / "figures",
            name=f"heatmap_{name}",
            title=f"{name}: p(gold token) on {hard[0]['id']} (k={top_k}, tau={tau:.6f})",
        )
        files[name] = {
            "figure": str(Path(hm.files["figure"]).relative_to(ctx.out)),
            "mean_gold_prob": _mean([t.prob for t in hm.tokens]),
        }
    return {"example": hard[0]["id"], "tau": tau, "models": files}


def stage_weights(ctx: Context) -> dict:
    """w(p) for every objective and lambda, with the w the trainer measured on each SED row (seed 0)."""
    from sedsft.analysis.weights import measured_weights, stationary_point, write_weights

    lams = sorted({*ctx.cfg.sed_lambdas, registry_default("sed", "lam")})
    measured = {}
    for v in ctx.cfg.variants():
        path = ctx.folder(sft_key(v, 0)) / "sedsft_metrics.jsonl"
        if v.objective == "sed" and path.is_file():
            measured[v.label] = measured_weights(path)
    files = write_weights(ctx.out / "figures" / "weights", lams=lams, measured=measured)
    return {
        "stationary_points": {f"{lam:g}": stationary_point(lam) for lam in lams},
        "measured": {
            name: {k: m.mean(k) for k in ("mask_rate", "mask_weight", "mask_neg_rate")}
            for name, m in measured.items()
        },
        "figure": str(files["figure"].relative_to(ctx.out)),
        "table": files["table"].read_text(),
    }


def stage_filter(ctx: Context) -> dict:
    """Offline difficulty filtering with the base model; the kept prompts are shared by every row."""
    from sedsft.eval.generation import HFBackend
    from sedsft.rl import filter_prompts, rl_prompts_from_records
    from sedsft.rl.filter import FilterConfig

    cfg, data, out = ctx.cfg, ctx.data, ctx.out / "filter"
    model, tok = _load(ctx.base_dir)
    prompts = rl_prompts_from_records(data.rl_records, system_prompt=DEMO_SYSTEM_PROMPT, source="rl_prompts")
    fcfg = FilterConfig(
        n=cfg.filter_n,
        temperature=1.0,
        top_p=1.0,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.data_seed,
        batch_prompts=max(1, cfg.gen_batch_size // cfg.filter_n),
    )
    backend = HFBackend(model, tok, batch_size=cfg.gen_batch_size, compute_entropy=False)
    res = filter_prompts(prompts, backend, config=fcfg, log_path=out / "solve_rates.jsonl")
    kept = [data.rl_records[i] for i in res.kept]
    atomic_write_json(out / "kept.json", kept or data.rl_records)
    per_split = {}
    for s in SPLITS:
        rates = [
            rate
            for r, rate in zip(data.rl_records, res.solve_rates)
            if r["benchmark"] == s and rate is not None
        ]
        per_split[s] = {
            "candidates": sum(r["benchmark"] == s for r in data.rl_records),
            "kept": sum(r["benchmark"] == s for r in kept),
            "mean_solve_rate": _mean(rates),
        }
    return {"summary": res.summary(), "per_split": per_split, "fallback_all_prompts": not kept}


def stage_grpo(ctx: Context, v: Variant, seed: int) -> dict:
    """GRPO from row ``v``'s SFT checkpoint on the shared filtered prompts, the same budget for every row."""
    from sedsft.rl import SEDGRPOConfig, rl_prompts_from_records, run_grpo

    cfg, out = ctx.cfg, ctx.folder(rl_key(v, seed))
    kept = read_json(ctx.out / "filter" / "kept.json")
    prompts = rl_prompts_from_records(kept, system_prompt=DEMO_SYSTEM_PROMPT, source="kept")
    config = SEDGRPOConfig(
        output_dir=str(out),
        max_steps=cfg.rl_steps,
        per_device_train_batch_size=cfg.rl_prompts_per_step * cfg.num_generations,
        gradient_accumulation_steps=1,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_new_tokens,
        learning_rate=cfg.rl_lr,
        beta=cfg.rl_beta,
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
    bar = _trainer_bar(cfg.rl_steps, f"GRPO {v.key} s{seed}", ctx.progress)
    with _quiet(out / "train.log"):
        result = run_grpo(
            config,
            model=str(ctx.folder(sft_key(v, seed))),
            train_dataset=prompts,
            callbacks=(bar,),
            resume="never",
        )
    rewards = [r["reward"] for r in result.log_history if "reward" in r]
    return {
        "model_dir": str(out),
        "global_step": result.global_step,
        "prompts": len(prompts),
        "rewards": rewards,  # mean reward per step (the report compares the first and last quarters)
        "reward_mean": _mean(rewards),
    }
