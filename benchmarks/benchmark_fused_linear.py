"""Forward+backward time and peak memory of LM-head losses: naive, Liger, CCE, TRL's fused head, sedsft's engine.

Each (method, shape) runs in a fresh subprocess. On CPU the child runs the method once and memory is the
peak RSS above the RSS once the inputs exist (the kernel's high-water mark is reset after allocating
them). On GPU the child runs it once to compile and warm up, then ``--reps`` times; time is the median
(CUDA events) and memory is ``torch.cuda.max_memory_allocated`` above the inputs over those runs. Every
method produces the [V, d] weight gradient, reported separately (``weight_grad_mib``) so that the summary
can also compare the memory above the inputs and the weight gradient. Methods are interleaved round by
round so that machine noise hits them alike. Optional baselines that are not installed (liger-kernel,
cut-cross-entropy) or cannot run (the Triton impl on CPU, out of memory) are recorded as skipped rows.
Rows are appended to ``benchmarks/results/fused_linear.csv`` (long format), and a ratio table is printed.

    python benchmarks/benchmark_fused_linear.py --device cuda            # bf16, the three GPU shapes, all methods
    python benchmarks/benchmark_fused_linear.py --shapes small           # CPU, a quick check (~1 min)
    python benchmarks/benchmark_fused_linear.py --shapes paper --rounds 2 # CPU, the targets of docs/performance.md
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "fused_linear.csv"
SHAPES = {  # name -> list of (N, d, V)
    "small": [(1024, 256, 32000)],
    "paper": [(2048, 896, 151936), (4096, 1024, 128256)],  # CPU
    "gpu": [(16384, 3584, 152064), (16384, 3072, 128256), (65536, 3584, 152064)],  # Qwen2.5-7B, Llama-3.2-3B
}
SEDSFT = [
    f"fused_{obj}{stats}{impl}"
    for impl in ("", "_triton")
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
    "cce_exact",  # the same without filtering, fp32 sums of both gradients
    *SEDSFT,  # fused_<objective>[_stats][_triton]: torch engine, or Triton with _triton; _stats logs statistics
]
GPU_ONLY = {"liger_flce", "liger_flce_fp32", "cce", "cce_exact"} | {
    m for m in SEDSFT if m.endswith("_triton")
}
TAU = 0.6  # a mid-range threshold: about half the random positions penalised
FIELDS = [
    "timestamp", "commit", "machine", "torch", "trl", "triton", "liger_kernel", "cut_cross_entropy", "device",
    "dtype", "N", "d", "V", "method", "round", "status", "time_s", "peak_mib_above_inputs", "weight_grad_mib", "loss",
]  # fmt: skip


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _method(method: str, hidden, weight, labels, flat_h, flat_y):
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
        return lambda: naive.sed_authors_style(flat_h @ weight.T, flat_y, tau=TAU)
    if method == "trl_fused_nll":
        from trl.kernels.chunked_logprob import ChunkedLogProbFunction
        from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

        def trl_nll():
            logp = ChunkedLogProbFunction.apply(
                flat_h, weight, None, flat_y, 1.0, _CHUNKED_LOGPROB_CHUNK_SIZE, None, 1.0, ()
            )[0]
            return -logp.sum() / flat_y.numel()

        return trl_nll
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
        exact = dict(filter_eps=None, accum_e_fp32=True, accum_c_fp32=True) if method == "cce_exact" else {}
        return lambda: linear_cross_entropy(flat_h, weight, flat_y, **exact)
    name, impl = method.removeprefix("fused_"), "torch"
    if name.endswith("_triton"):
        name, impl = name.removesuffix("_triton"), "triton"
    stats = name.endswith("_stats")
    name = name.removesuffix("_stats")
    opts = {"tau": TAU} if name == "sed" else {}
    try:
        losses.fused.resolve_impl(impl, hidden.device, hidden.dtype)
    except ValueError as e:
        return f"skipped: {e}"

    def fused():
        out = losses.fused_linear(
            hidden, weight, labels, objective=name, impl=impl, return_stats=stats, **opts
        )
        return out.loss if stats else out

    return fused


def child(method: str, N: int, d: int, V: int, dtype_name: str, device: str, reps: int) -> dict:
    import torch

    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    hidden = torch.randn(1, N + 1, d, dtype=dtype, device=device)  # one sequence: N scored positions
    weight = (torch.randn(V, d, device=device) / d**0.5).to(dtype)
    labels = torch.randint(0, V, (1, N + 1), device=device)
    hidden.requires_grad_()
    weight.requires_grad_()
    flat_h = hidden.detach()[0, :-1].clone().requires_grad_()  # [N, d] for the flat baselines
    flat_y = labels[0, 1:].clone()
    weight_grad_mib = V * d * weight.element_size() / 2**20
    fn = _method(method, hidden, weight, labels, flat_h, flat_y)
    if isinstance(fn, str):
        return {"status": fn}

    def step():
        for t in (hidden, weight, flat_h):
            t.grad = None  # the previous step's gradients are freed, not accumulated
        loss = fn()
        if loss.requires_grad:
            loss.backward()
        return loss

    try:
        if device == "cuda":
            step()  # compile (Triton) and warm up (cuBLAS, allocator)
            for t in (hidden, weight, flat_h):
                t.grad = None
            torch.cuda.synchronize()
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
    except torch.cuda.OutOfMemoryError:
        return {"status": "skipped: out of memory"}
    return {
        "status": "ok",
        "time_s": seconds,
        "peak_mib_above_inputs": peak,
        "weight_grad_mib": weight_grad_mib,
        "loss": float(loss),
    }


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
    ap.add_argument("--reps", type=int, default=5, help="cuda: timed runs per child after one warm-up run")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    ap.add_argument("--output", default=str(RESULTS))
    ap.add_argument("--summarize", metavar="CSV", help="print the ratio tables of rows already in CSV")
    ap.add_argument("--since", default="", help="with --summarize: only rows with timestamp >= this")
    ap.add_argument("--child", nargs=5, metavar=("METHOD", "N", "D", "V", "DTYPE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        m, n, d, v, dtype = args.child
        print(json.dumps(child(m, int(n), int(d), int(v), dtype, args.device, args.reps)))
        return 0
    if args.summarize:
        results: dict[tuple, list[dict]] = {}
        with open(args.summarize) as f:
            for row in csv.DictReader(f):
                if row["timestamp"] >= args.since and row.get("status", "ok") in ("ok", ""):
                    row.update(
                        time_s=float(row["time_s"]), peak_mib_above_inputs=float(row["peak_mib_above_inputs"])
                    )
                    results.setdefault((int(row["N"]), int(row["d"]), int(row["V"])), []).append(row)
        print(summarize(results))
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
    results: dict[tuple, list[dict]] = {}
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open_results(Path(args.output), FIELDS) as (f, writer):
        for shape in shapes:
            for r in range(args.rounds):
                for m in methods:
                    cmd = [sys.executable, __file__, "--device", args.device, "--reps", str(args.reps)]
                    cmd += ["--child", m, *map(str, shape), dtype]
                    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    if proc.returncode != 0:
                        print(f"{m} {shape}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                        res = {"status": f"failed: exit {proc.returncode}"}
                    else:
                        res = json.loads(proc.stdout.strip().splitlines()[-1])
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
                    if res["status"] != "ok":
                        print(f"{shape} round {r} {m:24s} {res['status']}")
                        continue
                    results.setdefault(shape, []).append(row)
                    print(
                        f"{shape} round {r} {m:24s} {res['time_s']:8.3f} s {res['peak_mib_above_inputs']:9.1f} MiB"
                    )
    print(summarize(results))
    return 0


# (target, numerator, denominator, limit): time or memory above the inputs and the weight gradient
TARGETS = [
    ("time", "fused_sed_triton", "liger_flce", 0.9),
    ("time", "fused_sed_triton", "fused_ce_triton", 1.05),
    ("time", "fused_sed_triton", "cce", 1.1),
    ("memory", "fused_sed_triton", "cce", 1.1),
    ("memory", "fused_sed_triton", "liger_flce", 0.5),
    ("time", "fused_ce_stats", "fused_ce", 1.10),
    ("time", "fused_sed_stats", "fused_sed", 1.10),
    ("time", "fused_ce_stats_triton", "fused_ce_triton", 1.10),
]


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
        for kind, num, den, limit in TARGETS:
            if num in by and den in by:
                if kind == "time":
                    ratio = t_min[num] / t_min[den]
                else:
                    ratio = (mem[num] - wgrad[num]) / max(mem[den] - wgrad[den], 1e-9)
                verdict = "met" if ratio <= limit else f"MISSED by {ratio / limit - 1:.0%}"
                lines.append(f"{kind} {num} / {den} = {ratio:.3f} (target <= {limit}): {verdict}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
