"""Compile every kernel configuration sedsft's GPU engines can launch, for each GPU generation, without a GPU.

For each engine in ``sedsft.losses.fused.GPU_ENGINES`` and each class of call the engine can get (bf16 and
fp32 inputs, every registered objective, k in {1, 2, 8} -- and no top-k where the objective needs none and
no statistics are asked for --, frozen head or not), ``engine.launch_options(...)`` lists, per kernel, the
configurations it can launch in order of preference. Each distinct configuration is compiled once per
architecture with ``launch.compile_offline`` (Triton's bundled ptxas; no GPU, no driver) and its registers,
spills and shared memory are read off the cubin. Then, per (call, kernel, architecture), ``launch.choose``
is called exactly as the engine calls it at run time; the configuration it returns is marked
``auto_launches`` on that architecture.

The check fails (exit 1), listing why, if on some architecture
- a configuration that ``choose`` picks needs more shared memory than the architecture has, or spills;
- ``choose`` finds no launchable configuration for some kernel of some call (the engine could not run);
- ``choose`` would raise, because a configuration it tries before a fitting one does not compile (at run
  time the engine would crash instead of moving on).
A configuration that does not compile is a row with ``compiled: false`` and the error.

    python benchmarks/compile_check.py --arch 80,86,89,90 --json benchmarks/results/compile_check.json
    python benchmarks/compile_check.py --summary benchmarks/results/compile_check.json   # the tables only
    # after a kernel change: recompile only what changed (the results of unchanged configurations reused)
    python benchmarks/compile_check.py --reuse benchmarks/results/compile_check.json --json benchmarks/results/compile_check.json

Compilations run in ``--jobs`` worker processes (forked: the configurations are built once, here). A full
run compiles every configuration; ``--lazy`` only those ``choose`` tries (same verdict); ``--reuse TABLE``
takes an earlier table's results where the kernel source and configuration are unchanged and compiles a
``--sample`` of them again, which must agree (the test in ``make test`` does this, with ``--max-compiles``
so that a stale table fails at once instead of compiling for tens of minutes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib
import json
import multiprocessing
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# The kernels must be the real @triton.jit functions, not the interpreter's stand-ins (the test suite sets
# TRITON_INTERPRET=1 for its own processes): drop it before anything imports triton.
os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402

from sedsft.losses import launch  # noqa: E402
from sedsft.losses.objectives import OBJECTIVES  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "compile_check.json"
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
TOP_KS = (1, 2, 8)
SHAPE = (3584, 152064)  # (d, V) of Qwen2.5-7B, the shape; the options may depend on it


@dataclass(frozen=True)
class Call:
    """One class of call an engine can get: the arguments of ``launch_options``."""

    dtype: str
    objective: str
    top_k: int | None
    frozen_head: bool

    def options(self, engine, d: int, vocab: int) -> dict[str, list[launch.Launch]]:
        return engine.launch_options(
            dtype=DTYPES[self.dtype],
            objective=self.objective,
            top_k=self.top_k,
            frozen_head=self.frozen_head,
            d=d,
            vocab=vocab,
        )

    def __str__(self) -> str:
        head = "frozen head" if self.frozen_head else "trained head"
        return f"{self.dtype} {self.objective} top_k={self.top_k} {head}"


def calls() -> list[Call]:
    """Every call class: an objective with a mask always has a k; the others also run without (no statistics)."""
    out = []
    for dtype in DTYPES:
        for name, obj in OBJECTIVES.items():
            ks = TOP_KS if obj.mask is not None else (None, *TOP_KS)
            for k in ks:
                for frozen in (False, True):
                    out.append(Call(dtype, name, k, frozen))
    return out


def engines(specs: list[str] | None) -> dict[str, object]:
    """The engines to check: ``NAME=module[:attribute]`` specs, or sedsft's own ``GPU_ENGINES``."""
    if specs:
        out = {}
        for spec in specs:
            name, _, target = spec.partition("=")
            module, _, attr = target.partition(":")
            if not name or not module:
                raise SystemExit(f"--engine takes NAME=module[:attribute], got {spec!r}")
            obj = importlib.import_module(module)
            out[name] = getattr(obj, attr) if attr else obj
        return out
    from sedsft.losses import fused

    gpu_engines = getattr(fused, "GPU_ENGINES", None)
    if not gpu_engines:
        raise SystemExit("sedsft.losses.fused has no GPU_ENGINES: no GPU engine to check")
    missing = [name for name, engine in gpu_engines.items() if not hasattr(engine, "launch_options")]
    if missing:
        raise SystemExit(f"GPU_ENGINES {missing} have no launch_options(): nothing to compile for them")
    return dict(gpu_engines)


def compile_key(lch: launch.Launch) -> tuple:
    """Two launches with equal keys compile to the same cubin (the key of ``launch.compile_offline``'s cache)."""
    return (
        lch.kernel, tuple(lch.signature.items()), tuple(lch.constexprs.items()), lch.num_warps, lch.num_stages,
        lch.multiple_of_16,
    )  # fmt: skip


def source_key(lch: launch.Launch) -> str:
    """A configuration's identity across processes: the kernel's source (with what it calls), its argument
    types, constants, warps, stages and alignment hints, and the Triton version."""
    import triton

    parts = (lch.kernel.cache_key, *compile_key(lch)[1:], triton.__version__)
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:20]


_UNIQUE: list[launch.Launch] = []  # the distinct configurations; forked workers read them by index


def _compile_one(job: tuple[int, int, str | None]) -> dict:
    index, arch, keep = job
    try:
        res = launch.compile_offline(_UNIQUE[index], arch, keep_dir=keep)
    except (
        Exception
    ) as e:  # a configuration that does not compile is a result of the check (a row), not a crash
        first = (str(e).strip().splitlines() or [""])[0]
        return {"compiled": False, "error": f"{type(e).__name__}: {first}"[:500]}
    return {
        "compiled": True,
        "registers": res.registers,
        "spills": res.spills,
        "shared_bytes": res.shared_bytes,
        "error": None,
    }


def _compile_all(
    jobs_list: list[tuple[int, int]], keep: str | None, jobs: int
) -> dict[tuple[int, int], dict]:
    """(config index, arch) -> the compile result, ``jobs`` compilations at a time."""
    work = [(i, arch, keep) for i, arch in jobs_list]
    if jobs > 1 and len(work) > 1:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            results = list(pool.map(_compile_one, work, chunksize=1))
    else:
        results = [_compile_one(w) for w in work]
    return dict(zip(jobs_list, results))


def _fits(r: dict, limits: launch.DeviceLimits) -> bool:
    return (
        r["compiled"]
        and launch.fits(launch.Resources(r["registers"], r["spills"], r["shared_bytes"]), limits) is None
    )


def check(
    engine_map: dict[str, object],
    archs: list[int],
    *,
    d: int = SHAPE[0],
    vocab: int = SHAPE[1],
    keep: str | None = None,
    jobs: int = 2,
    lazy: bool = False,
    reuse: dict | None = None,
    sample: int = 4,
    max_compiles: int | None = None,
) -> dict:
    """The compile-check table (see the module docstring) as a JSON-ready dict.

    ``lazy``: compile only the configurations that ``choose`` tries (the first few in preference order,
    as a run time does); the others are rows with ``compiled: None``. The verdict is the same.
    ``reuse``: an earlier table; its results are taken for every (configuration, arch) whose source key is
    the same (same kernel source, constants, options, Triton), and ``sample`` of them, those that auto
    launches with the most shared memory for their limit, are compiled again and must agree. The rest are
    compiled. The table records how many results were reused and how many compiled.
    ``max_compiles``: stop (SystemExit) rather than compile more than this many (a stale ``reuse`` table).
    """
    unknown = [a for a in archs if a not in launch.ARCH_LIMITS]
    if unknown:
        raise SystemExit(f"--arch: no limits known for {unknown}; known: {sorted(launch.ARCH_LIMITS)}")
    _UNIQUE.clear()
    index_of: dict[tuple, int] = {}
    rank: dict[tuple[str, str, int], int] = {}  # (engine, kernel, config index) -> best preference position
    plans: list[tuple[str, Call, str, list[int]]] = []  # (engine, call, kernel, option indices)
    all_calls = calls()
    for ename, engine in engine_map.items():
        for call in all_calls:
            for kname, options in call.options(engine, d, vocab).items():
                if not options:
                    raise SystemExit(f"{ename}.launch_options gave no configuration for {kname} ({call})")
                idx = []
                for pos, lch in enumerate(options):
                    i = index_of.setdefault(compile_key(lch), len(_UNIQUE))
                    if i == len(_UNIQUE):
                        _UNIQUE.append(lch)
                    idx.append(i)
                    key = (ename, kname, i)
                    rank[key] = min(rank.get(key, pos), pos)
                plans.append((ename, call, kname, idx))

    keys = [source_key(lch) for lch in _UNIQUE]
    compiled: dict[tuple[int, int], dict] = {}
    if reuse:
        old = {
            (r["source"], r["arch"]): r
            for r in reuse["rows"]
            if r.get("source") and r["compiled"] is not None
        }
        fields = ("compiled", "registers", "spills", "shared_bytes", "error")
        for i, key in enumerate(keys):
            for arch in archs:
                if (key, arch) in old:
                    compiled[(i, arch)] = {f: old[(key, arch)].get(f) for f in fields}
    reused = set(compiled)

    def compile_missing(need: list[tuple[int, int]]) -> None:
        if max_compiles is not None and len(compiled) - len(reused) + len(need) > max_compiles:
            raise SystemExit(
                f"compile_check: {len(need)} (configuration, arch) results are not in the reused table (its "
                f"kernels or configurations changed); regenerate it: python benchmarks/compile_check.py "
                f"--reuse benchmarks/results/compile_check.json --json benchmarks/results/compile_check.json"
            )
        compiled.update(_compile_all(need, keep, jobs))

    if (
        lazy
    ):  # rounds of parallel compilations: each (plan, arch) moves on from its candidate while it does not fit
        pos = {(p, arch): 0 for p in range(len(plans)) for arch in archs}
        while pos:
            compile_missing(sorted({(plans[p][3][k], arch) for (p, arch), k in pos.items()} - set(compiled)))
            for (p, arch), k in list(pos.items()):
                r = compiled[(plans[p][3][k], arch)]
                if not r["compiled"] or _fits(r, launch.ARCH_LIMITS[arch]) or k + 1 == len(plans[p][3]):
                    del pos[(p, arch)]
                else:
                    pos[(p, arch)] = k + 1
    else:
        compile_missing(
            [(i, arch) for i in range(len(_UNIQUE)) for arch in archs if (i, arch) not in compiled]
        )

    auto: set[tuple[str, str, int, int]] = set()  # (engine, kernel, config index, arch)
    failures: list[str] = []
    for arch in archs:
        limits = launch.ARCH_LIMITS[arch]
        for ename, call, kname, idx in plans:

            def resources(lch, arch=arch):
                key = (index_of[compile_key(lch)], arch)
                if key not in compiled:  # (lazy) a configuration the rounds above did not reach
                    compiled[key] = _compile_one((key[0], arch, keep))
                r = compiled[key]
                if not r["compiled"]:
                    raise RuntimeError(r["error"])  # what compile_offline raises at run time
                return launch.Resources(r["registers"], r["spills"], r["shared_bytes"])

            try:
                chosen = launch.choose([_UNIQUE[i] for i in idx], limits, resources)
            except RuntimeError as e:
                failures.append(f"sm_{arch} {ename}.{kname} ({call}): choose raises: {e}")
                continue
            if chosen is None:
                failures.append(f"sm_{arch} {ename}.{kname} ({call}): no launchable configuration")
                continue
            auto.add((ename, kname, index_of[compile_key(chosen)], arch))

    sampled = _recheck(compiled, auto, reused, n=sample if reuse else 0, keep=keep, jobs=jobs)
    failures += [f"a reused result differs from a new compilation: {d}" for d in sampled]

    rows = []
    for ename, kname, i in rank:
        for arch in archs:
            limit = launch.ARCH_LIMITS[arch].shared_bytes
            r = compiled.get((i, arch), {"compiled": None, "error": None})
            row = {
                "kernel": f"{ename}.{kname}",
                "config": _UNIQUE[i].config,
                "arch": arch,
                "compiled": r["compiled"],
                "registers": r.get("registers"),
                "spills": r.get("spills"),
                "shared_bytes": r.get("shared_bytes"),
                "limit_bytes": limit,
                "auto_launches": (ename, kname, i, arch) in auto,
                "preference": rank[(ename, kname, i)],
                "error": r["error"],
                "source": keys[i],
            }
            rows.append(row)
            if row["auto_launches"] and (row["shared_bytes"] > limit or row["spills"]):
                failures.append(
                    f"sm_{arch} {row['kernel']}: auto launches {row['config']}, which does not fit"
                )
    return {
        "rows": rows,
        "archs": archs,
        "shape": {"d": d, "vocab": vocab},
        "engines": sorted(engine_map),
        "calls": len(all_calls),
        "configurations": len(_UNIQUE),
        "compiles": len(compiled) - len(reused) + min(len(reused), sample if reuse else 0),
        "reused": len(reused),
        "lazy": lazy,
        "failures": failures,
        "triton": _triton_version(),
        "commit": _git_commit(),
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _recheck(compiled, auto, reused, *, n: int, keep, jobs) -> list[str]:
    """Compile again the ``n`` reused results that auto launches closest to their shared-memory limit."""

    def tightness(k):
        return (
            -compiled[k]["shared_bytes"] / launch.ARCH_LIMITS[k[1]].shared_bytes,
            -compiled[k]["registers"],
        )

    picked = sorted({(i, arch) for _, _, i, arch in auto} & reused, key=tightness)[:n]
    fields = ("compiled", "registers", "spills", "shared_bytes")
    out = []
    for (i, arch), new in _compile_all(picked, keep, jobs).items():
        old = [compiled[(i, arch)][f] for f in fields]
        if old != [new.get(f) for f in fields]:
            out.append(f"sm_{arch} {_UNIQUE[i].config}: table {old}, now {[new.get(f) for f in fields]}")
    return out


def summary(table: dict) -> str:
    """Markdown: per kernel and architecture, how many configurations fit, and what auto launches."""
    lines = [
        f"{table['configurations']} distinct configurations of {len({r['kernel'] for r in table['rows']})} "
        f"kernels ({', '.join(table['engines'])}; {table['calls']} call classes, (d, V) = "
        f"({table['shape']['d']}, {table['shape']['vocab']})), {table['compiles']} compilations"
        f"{' and ' + str(table['reused']) + ' results reused' if table.get('reused') else ''}"
        f"{' (lazy: only what choose tries)' if table.get('lazy') else ''}, Triton {table['triton']}, "
        f"commit {table['commit']}.",
        "",
        "| kernel | arch | configurations: compiled / fit / all | auto launches (by preference: 1st, 2nd, ...) "
        "| registers (max) | spills | shared KiB (max) / limit |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for kernel in dict.fromkeys(r["kernel"] for r in table["rows"]):
        for arch in table["archs"]:
            mine = [r for r in table["rows"] if r["kernel"] == kernel and r["arch"] == arch]
            ok = [r for r in mine if r["compiled"]]
            fit = [r for r in ok if not r["spills"] and r["shared_bytes"] <= r["limit_bytes"]]
            picked = [r for r in mine if r["auto_launches"]]
            by_rank = [
                sum(r["preference"] == p for r in picked)
                for p in range(1 + max(r["preference"] for r in mine))
            ]
            while by_rank and not by_rank[-1]:
                by_rank.pop()
            regs = max((r["registers"] for r in picked), default=None)
            spills = max((r["spills"] for r in picked), default=None)
            shared = max((r["shared_bytes"] for r in picked), default=0)
            lines.append(
                f"| {kernel} | sm_{arch} | {len(ok)} / {len(fit)} / {len(mine)} | {len(picked)}"
                f"{' (' + ', '.join(map(str, by_rank)) + ')' if picked else ''} | {regs} | {spills} "
                f"| {shared / 1024:.0f} / {mine[0]['limit_bytes'] // 1024} |"
            )
    failures = table["failures"]
    lines += ["", f"Failures: {len(failures)}" + (":" if failures else ".")]
    lines += [f"- {f}" for f in failures[:50]]
    if len(failures) > 50:
        lines.append(f"- ... and {len(failures) - 50} more (the JSON lists them all)")
    return "\n".join(lines)


def _triton_version() -> str:
    import triton

    return triton.__version__


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _write_json(path: Path, table: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(table, indent=1) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--arch", default="80,86,89,90", help="comma-separated compute capabilities (80,86,89,90)"
    )
    ap.add_argument("--json", default=str(RESULTS), help="where to write the table")
    ap.add_argument("--keep", metavar="DIR", help="keep the cubins built, in DIR")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="parallel compilations")
    ap.add_argument(
        "--engine", action="append", metavar="NAME=MODULE[:ATTR]", help="check these instead of GPU_ENGINES"
    )
    ap.add_argument(
        "--shape", default=f"{SHAPE[0]},{SHAPE[1]}", metavar="D,V", help="hidden size and vocabulary"
    )
    ap.add_argument(
        "--lazy", action="store_true", help="compile only what choose tries (same verdict, fewer)"
    )
    ap.add_argument(
        "--reuse", metavar="JSON", help="reuse this earlier table's results where nothing changed"
    )
    ap.add_argument("--sample", type=int, default=4, help="with --reuse: reused results compiled again")
    ap.add_argument("--max-compiles", type=int, help="fail rather than compile more (a stale --reuse table)")
    ap.add_argument(
        "--summary", metavar="JSON", help="print the summary of a table already written, and exit"
    )
    args = ap.parse_args(argv)
    if args.summary:
        print(summary(json.loads(Path(args.summary).read_text())))
        return 0
    try:
        archs = [int(a) for a in args.arch.split(",") if a]
        d, vocab = (int(x) for x in args.shape.split(","))
    except ValueError:
        raise SystemExit(
            f"--arch takes integers like 80,86,89,90 and --shape D,V; got {args.arch!r}, {args.shape!r}"
        ) from None
    table = check(
        engines(args.engine),
        archs,
        d=d,
        vocab=vocab,
        keep=args.keep,
        jobs=max(1, args.jobs),
        lazy=args.lazy,
        reuse=json.loads(Path(args.reuse).read_text()) if args.reuse else None,
        sample=args.sample,
        max_compiles=args.max_compiles,
    )
    _write_json(Path(args.json), table)
    print(summary(table))
    return 1 if table["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
