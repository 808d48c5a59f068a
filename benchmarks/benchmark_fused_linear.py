"""Forward+backward time and peak memory of LM-head losses: naive, Liger, CCE, TRL's fused head, sedsft's engines.

Each (method, shape) runs in a fresh subprocess, or, with ``--in-process`` (the GPU check), all methods in
this one process, inputs built once and the allocator's peak reset between methods. On CPU the child
runs the method once and memory is the peak RSS above the RSS once the inputs exist (the kernel's
high-water mark is reset after allocating them). On GPU the method runs once to compile and warm up, then
``--reps`` times; time is the median (CUDA events) and memory is ``torch.cuda.max_memory_allocated`` above
the inputs over those runs. Every method produces the [V, d] weight gradient, reported separately
(``weight_grad_mib``) so that the summary can also compare the memory above the inputs and the weight
gradient. Methods are interleaved round by round so that machine noise hits them alike. Optional
baselines that are not installed (liger-kernel, cut-cross-entropy) or cannot run (a GPU engine on CPU, out
of memory) are recorded as skipped rows. Rows are appended to ``benchmarks/results/fused_linear.csv``
(long format), and a ratio table is printed. ``--kernels JSON`` adds one profiled call per method
(torch.profiler): the time of each GPU kernel it launched (on CPU, of each operator).

Inputs (``--inputs``): ``peaked`` (default) scales the head so that the mean top-1 probability is about
0.45, as in a trained model, and draws each label from the model's own distribution; SED's tau is the
median top-2 mass, so about half the positions are penalised. (``randn``, the inputs of the rows before
issue 19: N(0, 1) logits, p ~ 1/V everywhere, so CCE's gradient filter skips every tile and SED's mask
penalises every position.)

    python benchmarks/benchmark_fused_linear.py --device cuda            # bf16, the three GPU shapes, all methods
    python benchmarks/benchmark_fused_linear.py --shapes small           # CPU, a quick check (~1 min)
    python benchmarks/benchmark_fused_linear.py --shapes paper --rounds 2 # CPU, the targets of docs/performance.md
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "fused_linear.csv"
SHAPES = {  # name -> list of (N, d, V)
    "small": [(1024, 256, 32000)],
    "paper": [(2048, 896, 151936), (4096, 1024, 128256)],  # CPU
    "gpu": [(16384, 3584, 152064), (16384, 3072, 128256), (65536, 3584, 152064)],  # Qwen2.5-7B, Llama-3.2-3B
}
GPU_IMPLS = ("chunked", "recompute", "triton")  # sedsft's GPU engines ("triton": the best one for the call)
SEDSFT = [
    f"fused_{obj}{stats}{impl}"
    for impl in ("", *(f"_{i}" for i in GPU_IMPLS))
    for obj, stats in [("ce", ""), ("sed", ""), ("dft", ""), ("gem", ""), ("ce", "_stats"), ("sed", "_stats")]
]
METHODS = [
    "bare_matmuls",  # the floor: h W^T, G W, G^T h at full size, nothing else
    "naive_ce",  # materialised logits (input dtype) + F.cross_entropy
    "naive_sed_authors",  # materialised log-softmax, softmax and top-k, as the released SED-SFT code
    "trl_fused_nll",  # TRL's chunked log-prob head (Triton folds on GPU, its torch path on CPU)
    "liger_flce",  # Liger-Kernel's LigerFusedLinearCrossEntropyLoss, defaults (weight grad summed in bf16)
    "liger_flce_fp32",  # the same with accum_dtype=float32 (like sedsft's fp32 weight-gradient sum)
    "cce",  # cut-cross-entropy's linear_cross_entropy, defaults (gradient filtering, bf16 sums)
    "cce_exact",  # the same without filtering (and fp32 sums of both gradients where the version has them)
    *SEDSFT,  # fused_<objective>[_stats][_<gpu impl>]: the torch engine, or a GPU engine; _stats logs statistics
]
GPU_ONLY = {"liger_flce", "liger_flce_fp32", "cce", "cce_exact"} | {
    m for m in SEDSFT if m.endswith(tuple(f"_{i}" for i in GPU_IMPLS))
}
RANDN_TAU = 0.6  # randn inputs: every top-2 mass is ~2/V, so every position is penalised at any such tau
TOP1_TARGET = 0.45  # peaked inputs: the mean top-1 probability the head is scaled to
FIELDS = [
    "timestamp", "commit", "machine", "torch", "trl", "triton", "liger_kernel", "cut_cross_entropy", "device",
    "dtype", "N", "d", "V", "method", "round", "status", "time_s", "peak_mib_above_inputs", "weight_grad_mib", "loss",
    "inputs", "tau", "top1_p", "gold_p", "mask_rate", "process",
]  # fmt: skip


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _method(method: str, hidden, weight, labels, flat_h, flat_y, tau: float):
    """A function running one forward + backward of ``method`` (returns the loss), or a reason it cannot run."""
    import torch
    import torch.nn.functional as F

    from sedsft import losses
    from sedsft.losses import naive

    if method == "bare_matmuls":

        def bare():
            with torch.no_grad():
                g = flat_h @ weight.T  # [N, V]
                g @ weight  # [N, d]
                g.T @ flat_h  # [V, d]
            return g[0, 0]

        return bare
    if method == "naive_ce":
        return lambda: F.cross_entropy(flat_h @ weight.T, flat_y)
    if method == "naive_sed_authors":
        return lambda: naive.sed_authors_style(flat_h @ weight.T, flat_y, tau=tau)
    if method == "trl_fused_nll":
        from trl.kernels.chunked_logprob import ChunkedLogProbFunction
        from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

        def trl_nll():
            logp = ChunkedLogProbFunction.apply(
                flat_h, weight, None, flat_y, 1.0, _CHUNKED_LOGPROB_CHUNK_SIZE, None, 1.0, ()
            )[0]
            return -logp.sum() / flat_y.numel()

        return trl_nll
    if method.startswith(("liger_flce", "cce")) and hidden.device.type != "cuda":
        return "skipped: Liger's and CCE's kernels run on CUDA tensors only"
    if method.startswith("liger_flce"):
        try:
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
        except ImportError:
            return "skipped: liger-kernel not installed (pip install liger-kernel)"
        fn = LigerFusedLinearCrossEntropyLoss(accum_dtype=torch.float32 if method.endswith("fp32") else None)
        return lambda: fn(weight, flat_h, flat_y)
    if method.startswith("cce"):
        try:
            from cut_cross_entropy import linear_cross_entropy
        except ImportError:
            return "skipped: cut-cross-entropy not installed (pip install cut-cross-entropy)"
        exact = {}
        if method == "cce_exact":  # no filtering; fp32 sums where the version has them (not PyPI's 25.1.1)
            params = inspect.signature(linear_cross_entropy).parameters
            exact = {"filter_eps": None} | {k: True for k in ("accum_e_fp32", "accum_c_fp32") if k in params}
        return lambda: linear_cross_entropy(flat_h, weight, flat_y, **exact)
    name, impl = method.removeprefix("fused_"), "torch"
    for gpu_impl in GPU_IMPLS:
        if name.endswith(f"_{gpu_impl}"):
            name, impl = name.removesuffix(f"_{gpu_impl}"), gpu_impl
    stats = name.endswith("_stats")
    name = name.removesuffix("_stats")
    opts = {"tau": tau} if name == "sed" else {}
    if impl not in losses.fused.IMPLS:
        return f"skipped: impl {impl!r} is not in this sedsft"
    try:  # the engine this call would run on (a GPU engine that cannot run here says why)
        top_k = 2 if (stats or name == "sed") else None
        call = dict(
            objective=name, top_k=top_k, n_rows=flat_y.numel(), d=weight.shape[1], vocab=weight.shape[0]
        )
        losses.fused.resolve_impl(impl, hidden.device, hidden.dtype, **call)
    except ValueError as e:
        return f"skipped: {e}"

    def fused():
        out = losses.fused_linear(
            hidden, weight, labels, objective=name, impl=impl, return_stats=stats, **opts
        )
        return out.loss if stats else out

    return fused


@dataclass
class Inputs:
    """One benchmark's tensors: ``hidden`` [1, N + 1, d] and ``labels`` [1, N + 1] (N scored positions), the
    flat [N, d] / [N] copies for the baselines, and what the logits look like."""

    hidden: object
    weight: object
    labels: object
    flat_h: object
    flat_y: object
    meta: dict  # inputs, tau, top1_p, gold_p, mask_rate


def make_inputs(N: int, d: int, V: int, dtype_name: str, device: str, kind: str = "peaked") -> Inputs:
    """The same tensors for every method (fixed seeds); see the module docstring for ``kind``."""
    import torch

    dtype = getattr(torch, dtype_name)
    g = torch.Generator(device=device).manual_seed(0)
    hidden = torch.randn(N + 1, d, generator=g, device=device).to(dtype)  # one sequence: N scored positions
    weight = torch.randn(V, d, generator=g, device=device) / d**0.5
    if kind == "randn":
        labels = torch.randint(0, V, (N + 1,), generator=g, device=device)
        meta = {"inputs": kind, "tau": RANDN_TAU}
    elif kind == "peaked":
        weight *= _scale_for_top1(hidden[:256], weight, TOP1_TARGET)
        labels = torch.empty(N + 1, dtype=torch.long, device=device)
        for i in range(0, N + 1, 1024):  # labels from the model's own distribution, 1024 rows at a time
            p = torch.softmax((hidden[i : i + 1024].float() @ weight.T), dim=-1)  # [<=1024, V]
            labels[i : i + 1024] = torch.multinomial(p, 1, generator=g)[:, 0]
        meta = {"inputs": kind}
    else:
        raise SystemExit(f"--inputs must be peaked or randn, got {kind!r}")
    weight = weight.to(dtype)
    with torch.no_grad():  # what the logits look like, on (up to) 256 scored rows
        z = hidden[:256].float() @ weight.float().T  # [256, V]
        p = torch.softmax(z, dim=-1)
        top2 = p.topk(2, dim=-1).values.sum(-1)
        meta.setdefault("tau", round(float(top2.median()), 4))  # peaked: half the positions penalised
        meta["top1_p"] = float(p.max(-1).values.mean())
        meta["gold_p"] = float(p.gather(1, labels[1:257, None]).mean())
        meta["mask_rate"] = float((top2 < meta["tau"]).float().mean())
    hidden, labels = hidden[None].requires_grad_(), labels[None]
    weight.requires_grad_()
    flat_h = hidden.detach()[0, :-1].clone().requires_grad_()  # [N, d] for the flat baselines
    return Inputs(hidden, weight, labels, flat_h, labels[0, 1:].clone(), meta)


def _scale_for_top1(h, weight, target: float) -> float:
    """The factor s for which softmax(s h W^T) has mean top-1 probability ``target`` (bisection; one product)."""
    import torch

    z = h.float() @ weight.T  # [n, V]
    lo, hi = 0.0, 64.0
    for _ in range(30):
        s = (lo + hi) / 2
        top1 = torch.softmax(z * s, dim=-1).max(-1).values.mean()
        lo, hi = (s, hi) if top1 < target else (lo, s)
    return (lo + hi) / 2


def measure(method: str, x: Inputs, device: str, reps: int, kernels: bool = False) -> dict:
    """One method's time and peak memory above the inputs (see the module docstring); ``kernels``: profile too."""
    import torch

    weight_grad_mib = x.weight.numel() * x.weight.element_size() / 2**20
    fn = _method(method, x.hidden, x.weight, x.labels, x.flat_h, x.flat_y, x.meta["tau"])
    if isinstance(fn, str):
        return {"status": fn}

    def step():
        for t in (x.hidden, x.weight, x.flat_h):
            t.grad = None  # the previous step's gradients are freed, not accumulated
        loss = fn()
        if loss.requires_grad:
            loss.backward()
        return loss

    try:
        if device == "cuda":
            step()  # compile (Triton) and warm up (cuBLAS, allocator)
            for t in (x.hidden, x.weight, x.flat_h):
                t.grad = None
            torch.cuda.synchronize()
            torch.cuda.empty_cache()  # what an earlier method (in-process) left cached is not this one's
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            times = []
            for _ in range(reps):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                loss = step()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1000)
            seconds = statistics.median(times)
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        else:
            base = _rss_mib("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS high-water mark
            t0 = time.perf_counter()
            loss = step()
            seconds = time.perf_counter() - t0
            peak = _rss_mib("VmHWM") - base
        out = {"status": "ok", "time_s": seconds, "peak_mib_above_inputs": peak}
        out |= {"weight_grad_mib": weight_grad_mib, "loss": float(loss)}
        if kernels:
            out["kernels"] = profile_kernels(step, device)
    except torch.cuda.OutOfMemoryError:
        return {"status": "skipped: out of memory"}
    except (
        Exception
    ) as e:  # in one process (the GPU check), one method's failure is its row, not the run's end
        traceback.print_exc()
        return {"status": f"failed: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
    finally:
        for t in (x.hidden, x.weight, x.flat_h):
            t.grad = None
    return out


def profile_kernels(step, device: str, top: int = 15) -> list[dict]:
    """The kernels one ``step()`` launches (CPU: operators), by total time: name, calls, total ms."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CUDA] if device == "cuda" else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        step()
        if device == "cuda":
            torch.cuda.synchronize()
    rows = []
    for evt in prof.key_averages():
        if device == "cuda":
            us = getattr(evt, "device_time_total", None) or getattr(evt, "cuda_time_total", 0)
            if getattr(evt, "device_type", None) != torch.autograd.DeviceType.CUDA or not us:
                continue
        else:
            us = evt.self_cpu_time_total
        rows.append({"kernel": evt.key[:160], "calls": evt.count, "total_ms": us / 1000})
    rows.sort(key=lambda r: -r["total_ms"])
    return rows[:top]


def child(method: str, N: int, d: int, V: int, dtype_name: str, device: str, reps: int, inputs: str) -> dict:
    x = make_inputs(N, d, V, dtype_name, device, inputs)
    return {**x.meta, **measure(method, x, device, reps)}


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        status = ["git", "status", "--porcelain", "--untracked-files=no"]
        dirty = subprocess.run(status, capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")  # uncommitted changes: say so
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def machine_meta(device: str, dtype: str) -> dict:
    """Who measured what: time, commit, machine and the versions of every library compared."""
    import torch

    return {
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "machine": f"{_cpu_name()} x{os.cpu_count()}" if device == "cpu" else torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "trl": _version("trl"),
        "triton": _version("triton") if _version("triton") != "absent" else _version("pytorch-triton"),
        "liger_kernel": _version("liger-kernel"),
        "cut_cross_entropy": _version("cut-cross-entropy"),
        "device": device,
        "dtype": dtype,
    }


@contextlib.contextmanager
def open_results(path: Path, fields: list[str]):
    """(file, DictWriter) appending to the CSV; an older header is widened first (old rows keep their values)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            old_fields, rows = reader.fieldnames or [], list(reader)
        if old_fields != fields:
            merged = fields + [k for k in old_fields if k not in fields]
            tmp = path.with_suffix(".tmp")
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=merged)
                w.writeheader()
                w.writerows(rows)
            tmp.replace(path)
            fields = merged
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        yield f, writer


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument(
        "--shapes", default=None, help="small | paper | gpu | N,d,V[;N,d,V...] (default: gpu on cuda)"
    )
    ap.add_argument("--methods", default=None, help="comma-separated (default: all that apply to the device)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved repetitions of every method")
    ap.add_argument("--reps", type=int, default=5, help="cuda: timed runs per method after one warm-up run")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    ap.add_argument(
        "--inputs", default="peaked", choices=["peaked", "randn"], help="see the module docstring"
    )
    ap.add_argument(
        "--in-process", action="store_true", help="every method in this process (cuda: peak reset between)"
    )
    ap.add_argument("--kernels", metavar="JSON", help="profile one more call per method: its kernels' times")
    ap.add_argument("--output", default=str(RESULTS))
    ap.add_argument("--summarize", metavar="CSV", help="print the ratio tables of rows already in CSV")
    ap.add_argument("--since", default="", help="with --summarize: only rows with timestamp >= this")
    ap.add_argument("--child", nargs=5, metavar=("METHOD", "N", "D", "V", "DTYPE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        m, n, d, v, dtype = args.child
        print(json.dumps(child(m, int(n), int(d), int(v), dtype, args.device, args.reps, args.inputs)))
        return 0
    if args.summarize:
        print(summarize(read_results(args.summarize, since=args.since)))
        return 0

    gpu = args.device == "cuda"
    shapes_arg = args.shapes or ("gpu" if gpu else "small")
    shapes = SHAPES.get(shapes_arg) or [tuple(int(x) for x in s.split(",")) for s in shapes_arg.split(";")]
    methods = args.methods.split(",") if args.methods else [m for m in METHODS if gpu or m not in GPU_ONLY]
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown method(s) {sorted(unknown)}; choose from {METHODS}")
    dtype = args.dtype or ("bfloat16" if gpu else "float32")
    if gpu:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is visible to torch")
    meta = machine_meta(args.device, dtype)
    meta["process"] = "one for all" if args.in_process else "one per method"
    results: dict[tuple, list[dict]] = {}
    kernels: dict[str, dict[str, list[dict]]] = {}
    failed = 0
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open_results(Path(args.output), FIELDS) as (f, writer):
        for shape in shapes:
            x = make_inputs(*shape, dtype, args.device, args.inputs) if args.in_process else None
            if x is not None:
                print(f"{shape} inputs: {json.dumps(x.meta)}")
            for r in range(args.rounds):
                for m in methods:
                    if x is not None:
                        res = {
                            **x.meta,
                            **measure(m, x, args.device, args.reps, kernels=bool(args.kernels) and r == 0),
                        }
                    else:
                        cmd = [sys.executable, __file__, "--device", args.device, "--reps", str(args.reps)]
                        cmd += ["--inputs", args.inputs, "--child", m, *map(str, shape), dtype]
                        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                        if proc.returncode != 0:
                            print(f"{m} {shape}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                            res = {"status": f"failed: exit {proc.returncode}"}
                        else:
                            res = json.loads(proc.stdout.strip().splitlines()[-1])
                    if "kernels" in res:
                        kernels.setdefault(",".join(map(str, shape)), {})[m] = res.pop("kernels")
                    row = {
                        **meta,
                        "N": shape[0],
                        "d": shape[1],
                        "V": shape[2],
                        "method": m,
                        "round": r,
                        **res,
                    }
                    writer.writerow(row)
                    f.flush()
                    failed += res["status"].startswith("failed")
                    if res["status"] != "ok":
                        print(f"{shape} round {r} {m:24s} {res['status']}")
                        continue
                    results.setdefault(shape, []).append(row)
                    print(
                        f"{shape} round {r} {m:24s} {res['time_s']:8.3f} s {res['peak_mib_above_inputs']:9.1f} MiB"
                    )
            if args.kernels:
                Path(args.kernels).write_text(json.dumps(kernels, indent=1) + "\n")
    print(summarize(results))
    return 1 if failed else 0


def read_results(path: str, *, since: str = "") -> dict[tuple, list[dict]]:
    """The ok rows of a results CSV (timestamp >= ``since``), by shape, with numbers as floats."""
    results: dict[tuple, list[dict]] = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            if row["timestamp"] >= since and row.get("status", "ok") in ("ok", ""):
                row.update(
                    time_s=float(row["time_s"]), peak_mib_above_inputs=float(row["peak_mib_above_inputs"])
                )
                results.setdefault((int(row["N"]), int(row["d"]), int(row["V"])), []).append(row)
    return results


# (target, numerator, denominator, limit): time or memory above the inputs and the weight gradient.
# Issue 19 (GPU, bf16), then the CPU targets of issues 3 and 14 (docs/performance.md).
TARGETS = [
    ("time", "fused_sed_chunked", "bare_matmuls", 1.15),
    ("time", "fused_sed_chunked", "liger_flce", 0.7),
    ("time", "fused_sed_chunked", "fused_ce_chunked", 1.05),
    ("memory", "fused_sed_recompute", "cce_exact", 1.1),
    ("time", "fused_sed_recompute", "bare_matmuls", 1.5),
    ("time", "fused_sed", "naive_ce", 1.0),
    ("time", "fused_sed", "fused_ce", 1.05),
    ("time", "fused_sed", "bare_matmuls", 1.15),
    ("time", "fused_ce_stats", "fused_ce", 1.10),
    ("time", "fused_sed_stats", "fused_sed", 1.10),
]


def evaluate_targets(rows: list[dict]) -> list[dict]:
    """Each target whose two methods are among ``rows`` (one shape): the ratio (times by minimum over rounds,
    memory by median) and met or not."""
    by: dict[str, list[dict]] = {}
    for row in rows:
        by.setdefault(row["method"], []).append(row)
    out = []
    for kind, num, den, limit in TARGETS:
        if num not in by or den not in by:
            continue
        if kind == "time":
            a, b = (min(r["time_s"] for r in by[m]) for m in (num, den))
        else:
            a, b = (
                statistics.median(r["peak_mib_above_inputs"] for r in by[m])
                - float(by[m][0].get("weight_grad_mib") or 0)
                for m in (num, den)
            )
        ratio = a / max(b, 1e-9)
        out.append(dict(kind=kind, num=num, den=den, limit=limit, a=a, b=b, ratio=ratio, met=ratio <= limit))
    return out


def summarize(results: dict[tuple, list[dict]]) -> str:
    """Ratios vs naive CE from the medians and, robust to a busy machine, the minimums over rounds."""
    lines = []
    for shape, rows in results.items():
        by: dict[str, list[dict]] = {}
        for row in rows:
            by.setdefault(row["method"], []).append(row)
        t_med = {m: statistics.median(r["time_s"] for r in rs) for m, rs in by.items()}
        t_min = {m: min(r["time_s"] for r in rs) for m, rs in by.items()}
        mem = {m: statistics.median(r["peak_mib_above_inputs"] for r in rs) for m, rs in by.items()}
        wgrad = {m: float(rs[0].get("weight_grad_mib") or 0.0) for m, rs in by.items()}
        ref = "naive_ce" if "naive_ce" in by else next(iter(by))
        lines.append(f"\n(N, d, V) = {shape}: {len(rows) // len(by)} round(s); ratios vs {ref}")
        lines.append(
            "| method | time median (s) | time min (s) | x ref (min) | peak above inputs (MiB) | x ref "
            "| above inputs and weight grad (MiB) |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for m in by:
            lines.append(
                f"| {m} | {t_med[m]:.3f} | {t_min[m]:.3f} | {t_min[m] / t_min[ref]:.2f} | {mem[m]:.0f} "
                f"| {mem[m] / max(mem[ref], 1e-9):.2f} | {mem[m] - wgrad[m]:.0f} |"
            )
        for t in evaluate_targets(rows):
            verdict = "met" if t["met"] else f"MISSED by {t['ratio'] / t['limit'] - 1:.0%}"
            lines.append(
                f"{t['kind']} {t['num']} / {t['den']} = {t['ratio']:.3f} (target <= {t['limit']}): {verdict}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
