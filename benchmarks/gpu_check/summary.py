"""The last step of the GPU check: OUTDIR/summary.md from what the steps wrote, met or missed per target.

Reads OUTDIR/steps.tsv (each step's exit status and seconds), compile_check_gpu.json, parity.json, fused_linear.csv (+
fused_kernels.json), sft_step.csv and sharded_head.csv; a step that failed or did not run leaves its
targets "not measured", with the reason. The ratios come from the benchmark scripts' own rules
(``benchmark_fused_linear.evaluate_targets``), not from a second copy here.

    python benchmarks/gpu_check/summary.py OUTDIR
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from benchmark_fused_linear import TARGETS, evaluate_targets, read_results

GPU_TARGETS = TARGETS[:5]  # issue 19's, measured here; the rest are CPU targets (docs/performance.md)
SFT_TARGET = 0.97  # SFT step throughput SED / CE
KERNEL_METHODS = ("bare_matmuls", "fused_sed_chunked", "fused_sed_recompute", "liger_flce", "cce_exact")


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _steps(out: Path) -> dict[str, dict]:
    steps = {}
    for line in (out / "steps.tsv").read_text().splitlines() if (out / "steps.tsv").exists() else []:
        name, rc, seconds, limit = line.split("\t")
        steps[name] = {"rc": int(rc), "seconds": int(seconds), "limit": int(limit)}
    return steps


def _why_missing(methods: list[str], rows: list[dict], step: dict | None) -> str:
    status = {r["method"]: r["status"] for r in rows}
    if not step:
        return "not measured: the step did not run"
    reasons = [f"{m}: {status[m]}" for m in methods if m in status and status[m] != "ok"]
    reasons += [f"{m}: no row (step exit {step['rc']})" for m in methods if m not in status]
    return "not measured (" + "; ".join(reasons) + ")"


def fused_section(out: Path, steps: dict) -> list[str]:
    rows = _rows(out / "fused_linear.csv")
    lines = ["## Fused LM head: time and memory (step b)", ""]
    if rows:
        shape = f"({rows[0]['N']}, {rows[0]['d']}, {rows[0]['V']})"
        keys = ("inputs", "tau", "top1_p", "gold_p", "mask_rate")
        inputs = ", ".join(f"{k} {rows[0].get(k)}" for k in keys)
        lines += [f"(N, d, V) = {shape}, {rows[0]['dtype']}, {rows[0]['machine']}; inputs: {inputs}.", ""]
        lines += [
            "| method | status | time (s) | peak above inputs (MiB) | above inputs and weight grad (MiB) |"
        ]
        lines += ["|---|---|---:|---:|---:|"]
        for r in rows:
            if r["status"] == "ok":
                above = float(r["peak_mib_above_inputs"]) - float(r["weight_grad_mib"] or 0)
                lines.append(
                    f"| {r['method']} | ok | {float(r['time_s']):.4f} | {float(r['peak_mib_above_inputs']):.0f} "
                    f"| {above:.0f} |"
                )
            else:
                lines.append(f"| {r['method']} | {r['status']} | | | |")
        lines.append("")
    return lines


def target_lines(out: Path, steps: dict) -> list[str]:
    rows = _rows(out / "fused_linear.csv")
    ok = [r for rs in read_results(str(out / "fused_linear.csv")).values() for r in rs] if rows else []
    measured = {(t["kind"], t["num"], t["den"]): t for t in evaluate_targets(ok)}
    lines = ["| target | measured | verdict |", "|---|---|---|"]
    for kind, num, den, limit in GPU_TARGETS:
        what = f"{kind} {num} <= {limit}x {den}"
        t = measured.get((kind, num, den))
        if t is None:
            lines.append(f"| {what} | {_why_missing([num, den], rows, steps.get('fused'))} | not measured |")
            continue
        unit = "s" if kind == "time" else "MiB"
        got = f"{t['ratio']:.3f}x ({t['a']:.4g} {unit} / {t['b']:.4g} {unit})"
        lines.append(f"| {what} | {got} | {'met' if t['met'] else 'MISSED'} |")
    sft = {r["method"]: r for r in _rows(out / "sft_step.csv") if r["status"] == "ok"}
    for impl in ("chunked", "auto"):
        ce, sed = sft.get(f"fused_ce_{impl}"), sft.get(f"fused_sed_{impl}")
        what = f"SFT step throughput SED / CE >= {SFT_TARGET} ({impl})"
        if ce and sed:
            ratio = float(sed["tokens_per_s"]) / float(ce["tokens_per_s"])
            got = f"{ratio:.3f} ({float(sed['tokens_per_s']):.0f} / {float(ce['tokens_per_s']):.0f} tokens/s)"
            lines.append(f"| {what} | {got} | {'met' if ratio >= SFT_TARGET else 'MISSED'} |")
        else:
            all_rows = _rows(out / "sft_step.csv")
            why = _why_missing([f"fused_ce_{impl}", f"fused_sed_{impl}"], all_rows, steps.get("sft"))
            lines.append(f"| {what} | {why} | not measured |")
    lines.append(
        "| CPU: every target of docs/performance.md still holds | not part of the GPU check | see docs |"
    )
    return lines


def kernel_lines(out: Path) -> list[str]:
    path = out / "fused_kernels.json"
    if not path.exists():
        return []
    lines = ["## Per-kernel times, one profiled call per method (step b)", ""]
    for shape, methods in json.loads(path.read_text()).items():
        for m in [m for m in KERNEL_METHODS if m in methods] + [
            m for m in methods if m not in KERNEL_METHODS
        ]:
            lines.append(f"- {m} at ({shape}): " + "; ".join(
                f"`{k['kernel'][:60]}` {k['total_ms']:.2f} ms x{k['calls']}" for k in methods[m][:6]
            ))  # fmt: skip
    return lines + [""]


def other_lines(out: Path, steps: dict) -> list[str]:
    lines = ["## Compile check (step 0), parity (step a), SFT steps (step c), FSDP2 (step d)", ""]
    compile_table = out / "compile_check_gpu.json"
    if compile_table.exists():
        t = json.loads(compile_table.read_text())
        lines.append(
            f"- Compile check for sm_{', sm_'.join(map(str, t['archs']))}: {t['compiles']} compilations, "
            f"{t['reused']} results reused, {len(t['failures'])} failures"
            + "".join(f"\n  - {f}" for f in t["failures"][:10])
        )
    else:
        lines.append("- Compile check: no result (see compile.log).")
    parity = out / "parity.json"
    if parity.exists():
        p = json.loads(parity.read_text())
        bad = [r for r in p["results"] if not r["status"].startswith(("ok", "skipped"))]
        skipped = sum(r["status"].startswith("skipped") for r in p["results"])
        lines.append(
            f"- Parity against the logits path (fp64 reference), {p['device']}: "
            f"{p['cases'] - len(bad) - skipped} of {p['cases']} cases ok, {len(bad)} failed, {skipped} skipped."
        )
        for r in bad[:20]:
            lines.append(
                f"  - FAILED {r['impl']} {r['precision']} {r['objective']} {r['options']}: {r['status']}"
            )
    else:
        lines.append("- Parity: no result (see parity.log).")
    for r in _rows(out / "sft_step.csv"):
        lines.append(
            f"- SFT step {r['method']}: {r['status']}"
            + (f", {float(r['tokens_per_s']):.0f} tokens/s, peak {float(r['peak_mib']):.0f} MiB" if r["status"] == "ok" else "")
        )  # fmt: skip
    sharded = _rows(out / "sharded_head.csv")
    for r in sharded:
        lines.append(
            f"- FSDP2 trainer step ({r['config']}, {r['loss_impl']}, world {r['world']}, {r['seq_len']} tokens): "
            f"losses {r['losses']}, peak {r['peak_gib_max_rank']} GiB"
        )
    if not sharded:
        lines.append("- FSDP2 trainer step: no result (see fsdp2_*.log).")
    return lines + [""]


def main(argv=None) -> int:
    out = Path((argv or sys.argv[1:])[0])
    steps = _steps(out)
    env = json.loads((out / "env.json").read_text()) if (out / "env.json").exists() else {}
    lines = ["# GPU check", ""]
    if env:
        lines += ["Machine: " + ", ".join(f"{k} {v}" for k, v in env.items()) + ".", ""]
    lines += ["## Targets (issue 19)", ""] + target_lines(out, steps) + [""]
    lines += ["## Steps", "", "| step | exit | seconds | limit (s) |", "|---|---:|---:|---:|"]
    lines += [f"| {n} | {s['rc']} | {s['seconds']} | {s['limit']} |" for n, s in steps.items()] + [""]
    lines += fused_section(out, steps) + kernel_lines(out) + other_lines(out, steps)
    (out / "summary.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
