"""The GPU checks that run without a GPU: the compile check of every launchable kernel configuration, and the
rehearsal of ``benchmarks/gpu_check.sh`` on CPU under Triton's interpreter.

The compile check runs in a subprocess: it needs the real ``@triton.jit`` kernels, and this process has
TRITON_INTERPRET=1 (conftest). Its rules are tested on two small engines defined here (one whose first
configuration does not fit sm_86's shared memory or spills, one that cannot run on sm_86 at all), then the
check runs on sedsft's own engines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import triton
import triton.language as tl

ROOT = Path(__file__).resolve().parents[1]
COMPILE_CHECK = ROOT / "benchmarks" / "compile_check.py"
RESULTS = ROOT / "benchmarks" / "results" / "compile_check.json"
KIB = 1024


# ---- two small engines written for the check's rules (launch_options as the engines' contract) ------------


@triton.jit
def _fake_dot(A, B, C, M, N, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(A + rm[:, None] * K + rk[None, :], mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)
        b = tl.load(B + rk[:, None] * N + rn[None, :], mask=(rk[:, None] < K) & (rn[None, :] < N), other=0.0)
        acc = tl.dot(a, b, acc)
    tl.store(C + rm[:, None] * N + rn[None, :], acc, mask=(rm[:, None] < M) & (rn[None, :] < N))


@triton.jit
def _fake_rows(X, OUT, N, V, BLOCK_B: tl.constexpr, BLOCK_V: tl.constexpr):
    """A row max over a tile held whole in registers (a large tile on few warps spills)."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_V)
    ok = (rows[:, None] < N) & (cols[None, :] < V)
    x = tl.load(X + rows[:, None] * V + cols[None, :], mask=ok, other=float("-inf"))
    y = tl.exp(x - tl.max(x, axis=1)[:, None])
    y = y * tl.sum(y, axis=1)[:, None]
    tl.store(X + rows[:, None] * V + cols[None, :], y, mask=ok)
    tl.store(OUT + rows, tl.max(x, axis=1), mask=rows < N)


def _dot_launch(block_k: int, stages: int):
    from sedsft.losses import launch

    sig = {"A": "*bf16", "B": "*bf16", "C": "*fp32", "M": "i32", "N": "i32", "K": "i32"}
    consts = {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": block_k}
    sig |= dict.fromkeys(consts, "constexpr")
    return launch.Launch("dot", _fake_dot, sig, consts, 8, stages, multiple_of_16=("N", "K"))


def _rows_launch(block_b: int, warps: int):
    from sedsft.losses import launch

    sig = {
        "X": "*fp32",
        "OUT": "*fp32",
        "N": "i32",
        "V": "i32",
        "BLOCK_B": "constexpr",
        "BLOCK_V": "constexpr",
    }
    return launch.Launch("rows", _fake_rows, sig, {"BLOCK_B": block_b, "BLOCK_V": 1024}, warps, 1, ("V",))


def launch_options(*, dtype, objective, top_k, frozen_head, d, vocab):
    """Every call gets the same configurations (so the check must compile each once per architecture):
    the dot kernel at 5 stages (4 buffers of two 128 x 64 bf16 tiles: 128 KiB, above sm_86's 99 KiB) then 2
    stages, the row kernel on an 8 x 1024 fp32 tile with one warp (256 values a thread: spills) then 4 warps."""
    return {"dot": [_dot_launch(64, 5), _dot_launch(64, 2)], "rows": [_rows_launch(8, 1), _rows_launch(8, 4)]}


class BrokenEngine:
    """A dot kernel whose first configuration does not compile (tl.dot needs K >= 16), the second too big."""

    @staticmethod
    def launch_options(*, dtype, objective, top_k, frozen_head, d, vocab):
        return {"dot": [_dot_launch(8, 2), _dot_launch(64, 5)]}


# ---- running the check --------------------------------------------------------------------------------


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    return env


def _compile_check(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "table.json"
    proc = subprocess.run(
        [sys.executable, str(COMPILE_CHECK), "--json", str(out), *args],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=600,
    )
    assert out.exists(), proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def _fits(row: dict) -> bool:
    """The rule, written here independently of launch.fits: compiled, within shared memory, no spills."""
    return row["compiled"] and row["shared_bytes"] <= row["limit_bytes"] and row["spills"] == 0


def test_compile_check_rules_on_small_engines(tmp_path):
    proc, table = _compile_check(tmp_path, "--arch", "86,90", "--engine", "fake=tests.test_gpu_check")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    rows = table["rows"]
    # one compilation per distinct configuration and architecture, however many call classes share it
    assert table["calls"] > 50 and table["configurations"] == 4 and table["compiles"] == len(rows) == 8
    limits = {r["arch"]: r["limit_bytes"] for r in rows}
    assert limits == {86: 99 * KIB, 90: 227 * KIB}

    def row(kernel, arch, pos):
        opts = [r for r in rows if r["kernel"] == kernel and r["arch"] == arch]
        return opts[pos]

    # the 5-stage dot pipeline holds 4 buffers of two 128 x 64 bf16 tiles: 4 x 32 KiB > 99 KiB
    big = row("fake.dot", 86, 0)
    assert big["compiled"] and big["shared_bytes"] >= 128 * KIB > big["limit_bytes"]
    assert not big["auto_launches"] and row("fake.dot", 86, 1)["auto_launches"]
    assert row("fake.dot", 90, 0)["auto_launches"] and not row("fake.dot", 90, 1)["auto_launches"]
    # the one-warp row tile spills everywhere; auto takes the small one
    for arch in (86, 90):
        assert row("fake.rows", arch, 0)["spills"] > 0 and not row("fake.rows", arch, 0)["auto_launches"]
        assert row("fake.rows", arch, 1)["auto_launches"]
    # auto = the first configuration in preference order that fits, exactly one per kernel and architecture
    for kernel in ("fake.dot", "fake.rows"):
        for arch in (86, 90):
            opts = [r for r in rows if r["kernel"] == kernel and r["arch"] == arch]
            assert [r["auto_launches"] for r in opts] == [
                r is next(o for o in opts if _fits(o)) for r in opts
            ]


def test_compile_check_fails_where_a_kernel_cannot_launch(tmp_path):
    proc, table = _compile_check(
        tmp_path, "--arch", "86", "--engine", "broken=tests.test_gpu_check:BrokenEngine"
    )
    assert proc.returncode == 1
    bad, big = table["rows"]
    assert not bad["compiled"] and bad["error"] and bad["registers"] is None
    assert big["compiled"] and not big["auto_launches"]
    # the failing compile comes first: choose() raises at run time instead of moving on; every call says so
    assert table["failures"] and all(
        "choose raises" in f and "sm_86 broken.dot" in f for f in table["failures"]
    )
    assert "Failures:" in proc.stdout


def test_compile_check_of_sedsft_engines(tmp_path):
    """The check on GPU_ENGINES for sm_80/86/89/90. Compiling every configuration takes tens of minutes on two
    cores, so the results of the committed table (benchmarks/results/compile_check.json) are reused where the
    kernel source and the configuration are unchanged, and the 4 that auto launches closest to their
    shared-memory limit are compiled again and must agree; a stale table fails with the command that
    regenerates it."""
    from sedsft.losses import fused

    proc, table = _compile_check(
        tmp_path,
        "--arch",
        "80,86,89,90",
        "--lazy",
        "--reuse",
        str(RESULTS),
        "--sample",
        "4",
        "--max-compiles",
        "8",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = table["rows"]
    assert not table["failures"] and table["reused"] > 0
    assert set(table["engines"]) == set(fused.GPU_ENGINES)
    kernels = {r["kernel"] for r in rows}
    assert {k.split(".")[0] for k in kernels} == set(fused.GPU_ENGINES)
    for kernel in kernels:
        for arch in (80, 86, 89, 90):
            mine = [r for r in rows if r["kernel"] == kernel and r["arch"] == arch]
            assert mine, (kernel, arch)
            assert any(r["auto_launches"] for r in mine), f"{kernel}: nothing auto launches on sm_{arch}"
    for r in rows:
        if r["auto_launches"]:
            assert _fits(r), r
    committed = json.loads(RESULTS.read_text())
    assert not committed["lazy"] and committed["archs"] == [80, 86, 89, 90]  # the full table is committed
    assert all(r["compiled"] is not None for r in committed["rows"])


# ---- the rehearsal of the GPU check -------------------------------------------------------------------


def test_gpu_check_rehearsal(tmp_path):
    """``gpu_check.sh --rehearse``: every step runs on CPU at tiny shapes (kernels in the interpreter), the
    summary names every target; peers that need CUDA are skipped, not failed."""
    out = tmp_path / "out"
    env = {**_env(), "PYTHON": sys.executable, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--rehearse", str(out)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )  # fmt: skip
    logs = {p.name: p.read_text()[-1500:] for p in out.glob("*.log")}
    assert proc.returncode == 0, proc.stdout + proc.stderr + json.dumps(logs, indent=1)
    steps = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()]
    assert [s[0] for s in steps] == ["compile", "parity", "fused", "sft", "fsdp2_fused"]
    assert all(s[1] == "0" for s in steps)
    parity = json.loads((out / "parity.json").read_text())
    assert parity["failed"] == 0 and {r["impl"] for r in parity["results"]} == {
        "torch",
        "chunked",
        "recompute",
    }
    assert all(r["status"] == "ok" for r in parity["results"])
    fused = (out / "fused_linear.csv").read_text()
    assert (
        "fused_sed_chunked" in fused
        and "skipped: Liger's and CCE's kernels run on CUDA tensors only" in fused
    )
    kernels = json.loads((out / "fused_kernels.json").read_text())
    assert {"bare_matmuls", "fused_sed_chunked", "fused_sed_recompute"} <= set(next(iter(kernels.values())))
    summary = (out / "summary.md").read_text()
    for target in ("fused_sed_chunked <= 1.15x bare_matmuls", "fused_sed_chunked <= 0.7x liger_flce",
                   "fused_sed_chunked <= 1.05x fused_ce_chunked", "fused_sed_recompute <= 1.1x cce_exact",
                   "fused_sed_recompute <= 1.5x bare_matmuls", "SED / CE >= 0.97"):  # fmt: skip
        assert target in summary
    assert "| time fused_sed_chunked <= 0.7x liger_flce | not measured (liger_flce: skipped" in summary
    assert "FSDP2 trainer step (fsdp2, fused, world 1" in summary
