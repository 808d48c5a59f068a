"""The demo end to end on the tiny config: report structure, resume without redoing stages, same numbers
for the same seed, the CLI's one-line errors and the sweep entry point.

The tiny config trains a 14k-parameter model for a few steps: its numbers mean nothing, the test checks
the plumbing that the default demo runs with real budgets.
"""

from __future__ import annotations

import json
import re
import struct

import pytest

from sedsft.demo.config import ALL_OBJECTIVES, DISPLAY, DemoConfig
from sedsft.demo.world import SPLITS
from sedsft.errors import UserError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    import torch

    from sedsft.demo.pipeline import run_demo

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("demo")
    first = run_demo(DemoConfig.tiny(), output_dir=root / "out", cache_dir=root / "cache", progress=False)
    return root, first


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    return struct.unpack(">II", data[16:24])


def test_report_has_every_table_row_and_column(tiny_run):
    root, res = tiny_run
    md = res.report_path.read_text()
    assert "## Table 1" in md and "## Table 2" in md and "Strategy coverage" in md
    t1 = md.split("## Table 1")[1].split("## Table 2")[0]
    header = next(line for line in t1.splitlines() if line.startswith("| Model"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["Model", *SPLITS, "Avg"]
    for obj in ALL_OBJECTIVES:  # one row per objective in the SFT block and in the RL block
        rows = [line for line in t1.splitlines() if line.startswith(f"| {DISPLAY[obj]} |")]
        assert len(rows) == 2, obj
        for row in rows:
            cells = [float(c) for c in row.strip("|").split("|")[1:]]
            assert len(cells) == len(SPLITS) + 1 and all(0.0 <= c <= 100.0 for c in cells)
    assert "What the numbers say" in md and res.table.startswith("| Model |")


def test_figures_are_valid_pngs_with_data(tiny_run):
    root, res = tiny_run
    out = res.output_dir
    pngs = [
        out / "figures/sft_curves.png",
        out / "figures/rl_curves.png",
        out / "figures/topk/topk.png",
        out / "figures/heatmap_base.png",
        out / "figures/heatmap_ce_sft.png",
        out / "figures/heatmap_sed_sft.png",
    ]
    for p in pngs:
        w, h = _png_size(p)
        assert w > 100 and h > 100, p
        assert f"]({p.relative_to(out)})" in res.report_path.read_text()
    assert (out / "figures/sft_curves.csv").read_text().startswith("objective,step,loss")
    assert (out / "figures/topk/topk_tau.csv").exists()


def test_results_json_records_numbers_seeds_versions_and_times(tiny_run):
    root, res = tiny_run
    r = json.loads(res.results_path.read_text())
    for key in ("config", "seeds", "versions", "stage_seconds", "table", "evals", "filter", "calibration"):
        assert key in r, key
    assert r["seeds"] == [0]
    assert set(r["versions"]) == {"python", "torch", "transformers", "trl", "sedsft"}
    assert r["stage_seconds"]["base"] >= 0 and "rl/sed/s0" in r["stage_seconds"]
    assert r["calibration"]["sed/s0"] is not None and r["calibration"]["ce/s0"] is None
    for entry in r["table"].values():
        assert 0.0 <= entry["avg"]["mean"] <= 1.0
        for m in entry["splits"].values():
            assert 0.0 <= m["accuracy"]["mean"] <= 1.0 and 0.0 <= m["coverage"]["mean"] <= 4.0
            if m["self_bleu"] is not None:
                assert 0.0 <= m["self_bleu"]["mean"] <= 1.0
    assert {f"{ph}/{o}" for ph in ("sft", "rl") for o in ALL_OBJECTIVES} | {"base/base"} == set(r["table"])
    # the trainer's own logs are what the curves show
    metrics = (res.output_dir / "sft/sed/s0/sedsft_metrics.jsonl").read_text().splitlines()
    assert "mask_rate" in json.loads(metrics[0])


def test_rerun_resumes_and_same_seed_reproduces(tiny_run):
    from sedsft.demo.pipeline import run_demo

    root, first = tiny_run
    again = run_demo(DemoConfig.tiny(), output_dir=first.output_dir, cache_dir=root / "cache", progress=False)
    assert again.computed == [] and set(again.reused) == set(first.computed)
    calls = again.results["calls"]
    assert (
        len(calls) == 2
        and calls[0]["stages_computed"] == len(first.computed)
        and calls[1]["stages_computed"] == 0
    )
    fresh = run_demo(DemoConfig.tiny(), output_dir=root / "out2", cache_dir=root / "cache", progress=False)
    strip = lambda r: {k: {s: v["accuracy"] for s, v in e["splits"].items()} for k, e in r["evals"].items()}  # noqa: E731
    assert strip(fresh.results) == strip(first.results)
    # other budgets in the same folder are refused rather than mixed
    with pytest.raises(UserError, match=r"holds another run \(sft_steps 4 -> 5\)"):
        run_demo(
            DemoConfig.tiny(sft_steps=5),
            output_dir=first.output_dir,
            cache_dir=root / "cache",
            progress=False,
        )


def test_cli_bad_arguments_give_one_line(capsys):
    from sedsft.cli import main

    assert main(["demo", "--objectives", "ce,nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err
    assert main(["demo", "--seeds", "0"]) == 2
    assert re.search(r"seeds must be an integer >= 1", capsys.readouterr().err)


def test_sweep_point_exists_with_the_sweep_signature():
    import inspect

    from sedsft.analysis.sweep_cli import load_pipeline

    fn = load_pipeline("demo")
    params = inspect.signature(fn).parameters
    assert list(params)[:2] == ["mask_ratio", "top_k"] and "output_dir" in params


def test_sweep_point_runs_sed_with_the_given_r_and_k(tiny_run):
    from sedsft.demo.pipeline import sweep_point

    root, _ = tiny_run
    out = root / "sweep"
    got = sweep_point(0.5, 3, output_dir=out, cache_dir=root / "cache", config=DemoConfig.tiny())
    assert set(got) == {*SPLITS, "avg"} and all(0.0 <= v <= 1.0 for v in got.values())
    cal = json.loads((out / "sft/sed/s0/sedsft_calibration.json").read_text())
    assert cal["spec"]["top_k"] == 3 and cal["spec"]["mask_ratio"] == 0.5
