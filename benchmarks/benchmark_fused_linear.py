"""Forward+backward time and peak memory of the LM-head objectives: naive, TRL's fused NLL, sedsft fused.

Each (method, shape) runs in a fresh subprocess: on CPU, peak memory is the peak RSS above the RSS once
the inputs exist (the kernel's high-water mark is reset after allocating them); on GPU it is
``torch.cuda.max_memory_allocated`` above the inputs. Methods are interleaved round by round so that
machine noise hits them alike; ratios are computed from the medians of one run. Rows are appended to
``benchmarks/results/fused_linear.csv`` (long format), and a ratio table is printed.

    python benchmarks/benchmark_fused_linear.py --shapes small            # a quick check (~1 min)
    python benchmarks/benchmark_fused_linear.py --shapes paper --rounds 2 # the targets of docs/performance.md
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "fused_linear.csv"
SHAPES = {  # name -> list of (N, d, V)
    "small": [(1024, 256, 32000)],
    "paper": [(2048, 896, 151936), (4096, 1024, 128256)],
}
METHODS = [
    "bare_matmuls",  # the floor: h W^T, G W, G^T h at full size, nothing else
    "naive_ce",  # materialised logits + F.cross_entropy
    "naive_sed_authors",  # materialised log-softmax, softmax and top-k, as the released SED-SFT code
    "trl_fused_nll",  # TRL's chunked log-prob head (its CPU path on CPU)
    "fused_ce",
    "fused_sed",
    "fused_dft",
    "fused_gem",
]
TAU = 0.6  # a mid-range threshold: about half the random positions penalised


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(method: str, N: int, d: int, V: int, dtype_name: str, device: str) -> dict:
    import torch
    import torch.nn.functional as F

    from sedsft import losses
    from sedsft.losses import naive

    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    hidden = torch.randn(1, N + 1, d, dtype=dtype, device=device)  # one sequence: N scored positions
    weight = (torch.randn(V, d, device=device) / d**0.5).to(dtype)
    labels = torch.randint(0, V, (1, N + 1), device=device)
    hidden.requires_grad_()
    weight.requires_grad_()
    flat_h = hidden.detach()[0, :-1].clone().requires_grad_()  # [N, d] for the flat baselines
    flat_y = labels[0, 1:].clone()

    def run():
        if method == "bare_matmuls":
            with torch.no_grad():
                g = flat_h @ weight.T  # [N, V]
                g @ weight  # [N, d]
                g.T @ flat_h  # [V, d]
            return g[0, 0]
        if method == "naive_ce":
            loss = F.cross_entropy(flat_h @ weight.T, flat_y)
            loss.backward()
        elif method == "naive_sed_authors":
            loss = naive.sed_authors_style(flat_h @ weight.T, flat_y, tau=TAU)
            loss.backward()
        elif method == "trl_fused_nll":
            from trl.kernels.chunked_logprob import ChunkedLogProbFunction
            from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

            logp = ChunkedLogProbFunction.apply(
                flat_h, weight, None, flat_y, 1.0, _CHUNKED_LOGPROB_CHUNK_SIZE, None, 1.0, ()
            )[0]
            loss = -logp.sum() / N
            loss.backward()
        else:
            name = method.removeprefix("fused_")
            opts = {"tau": TAU} if name == "sed" else {}
            loss = losses.fused_linear(hidden, weight, labels, objective=name, **opts)
            loss.backward()
        return loss

    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _rss_mib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS high-water mark
    t0 = time.perf_counter()
    loss = run()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if device == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = _rss_mib("VmHWM") - base
    return {"time_s": seconds, "peak_mib_above_inputs": peak, "loss": float(loss)}


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="small", help="small | paper | N,d,V[;N,d,V...]")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--rounds", type=int, default=2, help="interleaved repetitions of every method")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="cuda" if os.environ.get("CUDA_VISIBLE_DEVICES") else "cpu")
    ap.add_argument("--output", default=str(RESULTS))
    ap.add_argument("--summarize", metavar="CSV", help="print the ratio tables of rows already in CSV")
    ap.add_argument("--since", default="", help="with --summarize: only rows with timestamp >= this")
    ap.add_argument("--child", nargs=5, metavar=("METHOD", "N", "D", "V", "DTYPE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        m, n, d, v, dtype = args.child
        print(json.dumps(child(m, int(n), int(d), int(v), dtype, args.device)))
        return 0

    if args.summarize:
        results: dict[tuple, list[dict]] = {}
        with open(args.summarize) as f:
            for row in csv.DictReader(f):
                if row["timestamp"] >= args.since:
                    row.update(
                        time_s=float(row["time_s"]), peak_mib_above_inputs=float(row["peak_mib_above_inputs"])
                    )
                    results.setdefault((int(row["N"]), int(row["d"]), int(row["V"])), []).append(row)
        print(summarize(results))
        return 0

    shapes = SHAPES.get(args.shapes) or [tuple(int(x) for x in s.split(",")) for s in args.shapes.split(";")]
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown method(s) {sorted(unknown)}; choose from {METHODS}")
    import torch
    import trl

    meta = {
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "machine": f"{_cpu_name()} x{os.cpu_count()}"
        if args.device == "cpu"
        else torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "trl": trl.__version__,
        "device": args.device,
        "dtype": args.dtype,
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    new = not out.exists()
    fieldnames = list(meta) + ["N", "d", "V", "method", "round", "time_s", "peak_mib_above_inputs", "loss"]
    results: dict[tuple, list[dict]] = {}
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(out, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        if new:
            writer.writeheader()
        for shape in shapes:
            for r in range(args.rounds):
                for m in methods:
                    cmd = [
                        sys.executable,
                        __file__,
                        "--device",
                        args.device,
                        "--child",
                        m,
                        *map(str, shape),
                        args.dtype,
                    ]
                    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    if proc.returncode != 0:
                        print(f"{m} {shape}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                        continue
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
                    results.setdefault(shape, []).append(row)
                    print(
                        f"{shape} round {r} {m:18s} {res['time_s']:8.2f} s {res['peak_mib_above_inputs']:9.1f} MiB"
                    )
    print(summarize(results))
    return 0


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
        ref = "naive_ce" if "naive_ce" in by else next(iter(by))
        lines.append(f"\n(N, d, V) = {shape}: {len(rows) // len(by)} round(s); ratios vs {ref}")
        lines.append(
            "| method | time median (s) | time min (s) | x ref (min) | peak above inputs (MiB) | x ref |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|")
        for m in by:
            lines.append(
                f"| {m} | {t_med[m]:.2f} | {t_min[m]:.2f} | {t_min[m] / t_min[ref]:.2f} | {mem[m]:.0f} "
                f"| {mem[m] / mem[ref]:.2f} |"
            )
        if "fused_sed" in by:
            for other in ("fused_ce", "bare_matmuls"):
                if other in by:
                    lines.append(
                        f"fused_sed / {other}: time {t_min['fused_sed'] / t_min[other]:.3f} (min), "
                        f"{t_med['fused_sed'] / t_med[other]:.3f} (median); memory {mem['fused_sed'] / mem[other]:.3f}"
                    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
