"""``impl="auto"`` on GPUs it was not built on: it fits (smaller tiles) or falls back, and never crashes.

The device is simulated: ``launch.device_limits`` returns the limits under test and the capability check is
skipped, so the dispatcher runs as on a CUDA device of that generation. The kernels' resources are real:
``launch.chosen`` compiles them for the architecture with Triton's bundled ptxas (no GPU needed). That
needs the real ``@triton.jit`` kernels, and this process runs them in the interpreter (conftest), so the
checks run in one subprocess without TRITON_INTERPRET and report back as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

KIB = 1024
ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = r"""
import json, os, sys, warnings
import torch
from sedsft.losses import fused, launch

cuda = torch.device("cuda")
call = dict(objective="sed", top_k=2, frozen_head=False, n_rows=16384, d=3584, vocab=152064)  # Qwen2.5-7B
launch.unsupported = lambda device, dtype, top_k=1: None  # no capability query: the device is simulated


def on(limits, impl="auto", budget_mb=None):
    launch.device_limits = lambda device: limits
    if budget_mb:
        os.environ["SEDSFT_FUSED_BUDGET_MB"] = str(budget_mb)
    else:
        os.environ.pop("SEDSFT_FUSED_BUDGET_MB", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            choice = [fused.select(impl, cuda, torch.bfloat16, **call) for _ in range(2)][0]  # one notice
        except ValueError as e:
            return {"error": str(e)}
    notices = [str(w.message) for w in caught if str(w.message).startswith("sedsft")]  # not Triton's own
    out = {"impl": choice.impl, "notices": notices, "kernels": {}}
    if choice.impl == "torch":
        return out
    engine = fused.GPU_ENGINES[choice.impl]
    options = engine.launch_options(
        dtype=torch.bfloat16, **{k: call[k] for k in ("objective", "top_k", "frozen_head", "d", "vocab")}
    )
    for name, lch in choice.launches.items():
        res = launch.compile_offline(lch, limits.arch)
        out["kernels"][name] = {
            "rank": [o.config for o in options[name]].index(lch.config),  # 0: the first preference
            "shared": res.shared_bytes, "spills": res.spills, "registers": res.registers,
            "first_fits": launch.fits(launch.compile_offline(options[name][0], limits.arch), limits) is None,
        }
    return out


sm86 = launch.ARCH_LIMITS[86]
print(json.dumps({
    "sm86": on(sm86),
    "sm86_small_budget": on(sm86, budget_mb=1),  # 3 rows of bf16 logits: too thin for the chunked engine
    "tiny_shared": on(launch.DeviceLimits(86, 20)),  # the row kernels' 2048-column reduction needs 32 B
    "no_shared": on(launch.DeviceLimits(86, 8)),
    "no_shared_chunked": on(launch.DeviceLimits(86, 8), impl="chunked"),
}))
"""


@pytest.fixture(scope="module")
def report():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _within(kernels: dict, shared_limit: int):
    for name, k in kernels.items():
        assert k["shared"] <= shared_limit and k["spills"] == 0 and k["registers"] <= 255, name


def test_a_99_kib_gpu_runs_the_chunked_engine(report):
    r = report["sm86"]
    assert r["impl"] == "chunked" and r["notices"] == []
    assert set(r["kernels"]) == {"row_stats", "row_grad"}
    _within(r["kernels"], 99 * KIB)


def test_recompute_on_99_kib_when_the_chunk_buffer_does_not_fit_the_budget(report):
    """The recompute engine's tiles, lowered where its first choice does not fit sm_86's shared memory."""
    r = report["sm86_small_budget"]
    assert r["impl"] == "recompute" and r["notices"] == []
    _within(r["kernels"], 99 * KIB)
    for name, k in r["kernels"].items():
        assert (k["rank"] == 0) == k["first_fits"], (
            name
        )  # a later option exactly where the first does not fit


def test_smaller_tiles_where_the_first_do_not_fit(report):
    r = report["tiny_shared"]
    assert r["impl"] == "chunked" and r["notices"] == []
    stats = r["kernels"]["row_stats"]
    assert stats["rank"] > 0 and not stats["first_fits"] and stats["shared"] <= 20


def test_falls_back_to_torch_with_one_notice(report):
    r = report["no_shared"]
    assert r["impl"] == "torch"
    assert len(r["notices"]) == 1  # once per process, though the call was made twice
    (notice,) = r["notices"]
    assert "\n" not in notice and "chunked" in notice and "recompute" in notice and "torch" in notice


def test_a_named_engine_that_cannot_run_is_refused(report):
    err = report["no_shared_chunked"]["error"]
    assert "impl='chunked' cannot run here" in err and "sm_86" in err and "impl='torch'" in err
