"""The demo pipeline: base model -> tau and Fig. 3 -> SFT per row -> filter -> GRPO -> evaluation.

:func:`plan` is the ONE list of stages, in order; it drives running, resuming, counting (the progress
bar) and reporting (each stage's seconds and numbers, by key). The stages themselves are small
functions in :mod:`sedsft.demo.stages`:

    base, data, analysis, eval/base/s0                      the shared base model, data, tau, Fig. 3
    sft/<row>/s<seed>, eval/sft/<row>/s<seed>               per seed and row (objectives, lambda rows)
    heatmaps, weights                                       Fig. 2 and w(p), from seed 0
    filter                                                  the base model filters the RL prompts once
    rl/<row>/s<seed>, eval/rl/<row>/s<seed>                 GRPO from each SFT checkpoint, same budget

Resuming. The output folder follows the run-folder rule (:mod:`sedsft.runs`): its ``sedsft_run.json``
records the budgets and the base model's fingerprint; the same budgets resume, others are refused
(``--overwrite`` replaces the folder). Inside it a finished stage writes ``stages/<key>.json``
atomically (its numbers and seconds); a rerun reads those back instead of redoing the stage, so adding
rows or seeds computes only the new stages. An evaluation also resumes inside its stage from its
``samples.jsonl``. Seeds repeat the per-row stages; the base model, the problem sets and the filtered
RL set are shared across seeds, as the paper's single base model and data are.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from sedsft.demo import stages as st
from sedsft.demo.config import DemoConfig, Variant
from sedsft.errors import UserError
from sedsft.io import JsonlLog, atomic_write_json, check_folder_path, read_json

STAGES_DIR = "stages"


@dataclass(frozen=True)
class Stage:
    key: str  # also the stage's folder under the run (where it has one) and its marker's name
    run: Callable[[st.Context], dict]
    needs: tuple[str, ...] = ()  # keys of the stages whose results or files it reads


def plan(cfg: DemoConfig, variants: list[Variant], *, rl: bool = True) -> list[Stage]:
    """Every stage of a run, in the order they run (module doc), each with the stages it needs."""
    seeds = range(cfg.seeds)
    out = [
        Stage("base", st.stage_base),
        Stage("data", st.stage_data),
        Stage("analysis", st.stage_analysis),
        Stage(st.eval_key("base", None, 0), partial(st.stage_eval, phase="base", v=None, seed=0)),
    ]
    for seed in seeds:
        for v in variants:
            sft = st.sft_key(v, seed)
            out.append(Stage(sft, partial(st.stage_sft, v=v, seed=seed)))
            out.append(
                Stage(
                    st.eval_key("sft", v, seed), partial(st.stage_eval, phase="sft", v=v, seed=seed), (sft,)
                )
            )
    firsts = [st.sft_key(v, 0) for v in variants]
    heat = tuple(k for k in (st.sft_key(Variant("ce"), 0), st.sft_key(Variant("sed"), 0)) if k in firsts)
    out.append(Stage("heatmaps", st.stage_heatmaps, ("analysis", *heat)))
    out.append(
        Stage("weights", st.stage_weights, tuple(st.sft_key(v, 0) for v in variants if v.objective == "sed"))
    )
    if rl:
        out.append(Stage("filter", st.stage_filter))
        for seed in seeds:
            for v in variants:
                rl_k = st.rl_key(v, seed)
                out.append(
                    Stage(rl_k, partial(st.stage_grpo, v=v, seed=seed), ("filter", st.sft_key(v, seed)))
                )
                out.append(
                    Stage(
                        st.eval_key("rl", v, seed),
                        partial(st.stage_eval, phase="rl", v=v, seed=seed),
                        (rl_k,),
                    )
                )
    return out


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


def _timed(run: Callable[[st.Context], dict], ctx: st.Context) -> dict:
    start, cpu = time.perf_counter(), time.process_time()
    info = dict(run(ctx))
    info["seconds"] = round(time.perf_counter() - start, 2)
    info["cpu_seconds"] = round(time.process_time() - cpu, 2)  # this process's CPU time: load-proof
    return info


def _worker_init(threads: int) -> None:
    """A worker process: its torch threads, quiet libraries, and Ctrl-C left to the parent."""
    import signal
    import warnings

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch
    import transformers

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def run_stages(
    ctx: st.Context, stages: list[Stage], *, jobs: int = 1, threads: int = 1
) -> tuple[list[str], list[str], dict[str, float]]:
    """Run each stage whose marker is missing, read back the others; (computed, reused, seconds).

    ``jobs`` > 1 runs up to that many stages at once, each in a worker process with ``threads`` torch
    threads, a stage as soon as the stages it needs are done. Every stage is seeded by itself and runs
    with a fixed thread count, so the numbers do not depend on ``jobs``; markers are written here only.
    """
    from tqdm.auto import tqdm

    computed, reused, seconds = [], [], {}
    marker = {s.key: ctx.out / STAGES_DIR / (s.key.replace("/", "__") + ".json") for s in stages}
    for s in stages:
        if marker[s.key].exists():
            ctx.done[s.key] = read_json(marker[s.key])
            reused.append(s.key)
    pending = [s for s in stages if s.key not in ctx.done]
    bar = tqdm(total=len(stages), initial=len(reused), desc="demo", unit="stage", disable=not ctx.progress)

    def finish(s: Stage, info: dict) -> None:
        atomic_write_json(marker[s.key], info)  # the stage is done only once this file exists
        ctx.done[s.key] = info
        computed.append(s.key)
        bar.update(1)

    if jobs <= 1:
        for s in pending:
            bar.set_description(f"demo: {s.key}")
            finish(s, _timed(s.run, ctx))
    else:
        _run_parallel(ctx, pending, finish, jobs=jobs, threads=threads, bar=bar)
    bar.close()
    for s in stages:
        seconds[s.key] = ctx.done[s.key]["seconds"]
    return computed, reused, seconds


def _run_parallel(ctx: st.Context, pending: list[Stage], finish, *, jobs: int, threads: int, bar) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    planned = {s.key for s in pending} | set(ctx.done)
    pool = ProcessPoolExecutor(
        jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init, initargs=(threads,)
    )
    running: dict = {}
    try:
        while pending or running:
            for s in list(pending):  # in plan order, whatever is ready
                if len(running) >= jobs:
                    break
                if all(n in ctx.done or n not in planned for n in s.needs):
                    worker_ctx = dataclasses.replace(ctx, progress=False, done=dict(ctx.done))
                    running[pool.submit(_timed, s.run, worker_ctx)] = s
                    pending.remove(s)
            if not running:
                raise RuntimeError(f"no stage can start: {[s.key for s in pending]} wait for each other")
            bar.set_description("demo: " + ", ".join(s.key for s in running.values()))
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                finish(running.pop(future), future.result())
    except BaseException:
        for process in list(pool._processes.values()):  # stop the workers' stages now, not after them
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def run_demo(
    cfg: DemoConfig,
    *,
    output_dir: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    rebuild_base: bool = False,
    overwrite: bool = False,
    wait: bool = False,
    variants: list[Variant] | None = None,
    rl: bool = True,
    report: bool = True,
    jobs: int = 1,
    threads: int = 1,
) -> DemoResult:
    """Run (or resume) every stage of :func:`plan` for ``cfg`` and write ``report.md`` and ``results.json``.

    ``variants`` replaces ``cfg.variants()`` (the sweep runs one custom SED-SFT row this way); ``jobs``
    and ``threads``: stages run at once and torch threads of each (:func:`run_stages`); ``wait``: if
    another process uses ``output_dir``, wait for it instead of refusing.
    """
    from sedsft.demo.base_model import build_base_model
    from sedsft.runs import RunSpec, open_run

    rows = variants if variants is not None else cfg.variants()
    if not rows:
        raise UserError("nothing to compare: give at least one objective or one sed lambda")
    out = Path(output_dir)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    check_folder_path(out, flag="--output_dir")  # both before the base model is written to the cache
    check_folder_path(cache, flag="--cache_dir" if cache_dir is not None else "$SEDSFT_CACHE")
    wall, started = time.perf_counter(), time.time()
    base_dir = build_base_model(cfg.base, cache / "demo-base", rebuild=rebuild_base, progress=progress)
    run = open_run(
        out,
        RunSpec("demo", settings=cfg.settings(), inputs={"base_model": base_dir}),
        overwrite=overwrite,
        wait=wait,
    )
    ctx = st.Context(cfg=cfg, out=out, base_dir=base_dir, progress=progress)
    stages = plan(cfg, rows, rl=rl)
    computed, reused, seconds = run_stages(ctx, stages, jobs=jobs, threads=threads)
    calls = JsonlLog(out / "calls.jsonl")  # every invocation's measured wall time, kept across reruns
    calls.append(
        {
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(time.perf_counter() - wall, 1),
            "seeds": cfg.seeds,
            "jobs": jobs,
            "threads": threads,
            "rows": [v.key for v in rows],
            "stages_computed": len(computed),
            "stages_reused": len(reused),
            "base_model": ctx.done["base"]["source"] if "base" in computed else "as before",
        }
    )
    results = {
        "config": cfg.to_dict(),
        "rows": {v.key: v.label for v in rows},
        "seeds": list(range(cfg.seeds)),
        "versions": versions(),
        "threads": _threads(),
        "stages": ctx.done,
        "stage_seconds": seconds,
        "computed_this_call": computed,
        "reused_this_call": reused,
        "wall_seconds_this_call": round(time.perf_counter() - wall, 1),
        "calls": calls.records(),
    }
    run.mark_finished()
    if not report:
        return DemoResult(out, out / "report.md", out / "results.json", results, "", computed, reused)
    from sedsft.demo.report import write_report

    written = write_report(out, cfg, rows, results)
    return DemoResult(out, written.report, written.results, results, written.table, computed, reused)


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


def _threads() -> dict:
    import torch

    return {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}


# --- one point of the sensitivity sweep (sedsft sweep --pipeline demo) ---------------------------------


def sweep_point(
    mask_ratio: float,
    top_k: int,
    lam: float | None = None,
    *,
    output_dir: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    rl: bool = False,
    config: DemoConfig | None = None,
) -> dict[str, float]:
    """SED-SFT with masking ratio ``mask_ratio``, ``top_k`` and ``lam`` (None: the registry's default) on
    the quick budget (optionally + GRPO), evaluated like the demo: ``{split: accuracy, ..., "avg": mean}``."""
    cfg = (config or DemoConfig.quick()).with_rows(objectives=(), sed_lambdas=(), seeds=1)
    options = (("top_k", int(top_k)),) + ((("lam", float(lam)),) if lam is not None else ())
    row = Variant("sed", options=options, train=(("mask_ratio", float(mask_ratio)),))
    if not 0.0 <= float(mask_ratio) <= 1.0:
        raise UserError(f"mask_ratio must be in [0, 1], got {mask_ratio}")
    res = run_demo(
        cfg, output_dir=output_dir, cache_dir=cache_dir, progress=False, variants=[row], rl=rl, report=False
    )
    ev = res.results["stages"][st.eval_key("rl" if rl else "sft", row, 0)]
    metrics = {s: float(m["accuracy"]) for s, m in ev["splits"].items()}
    metrics["avg"] = float(ev["average"])
    return metrics
