"""The demo end to end on the tiny config: the one stage list, report structure, resume without redoing
stages, the run-folder rule, same numbers for the same seed, the CLI's one-line errors and the sweep.

The tiny config trains a 14k-parameter model for a few steps: its numbers mean nothing, the test checks
the plumbing that the default demo runs with real budgets.
"""

from __future__ import annotations

import json
import struct

import pytest

from sedsft.demo.config import DemoConfig, Variant
from sedsft.demo.pipeline import plan
from sedsft.demo.world import SPLITS
from sedsft.errors import UserError
from sedsft.losses import OBJECTIVES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    import torch

    from sedsft.demo.pipeline import run_demo

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("demo")
    # two worker processes; the resume test reruns rows in this process and must get the same numbers
    first = run_demo(
        DemoConfig.tiny(), output_dir=root / "out", cache_dir=root / "cache", progress=False, jobs=2
    )
    return root, first


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    return struct.unpack(">II", data[16:24])


def test_rows_come_from_the_registry_and_the_lambda_ablation():
    cfg = DemoConfig.default()
    rows = cfg.variants()
    assert [v.key for v in rows] == [*OBJECTIVES, "sed_lam2", "sed_lam4"]
    assert [v.lam() for v in cfg.lambda_rows()] == [1.0, 2.0, 4.0]
    assert [v.label for v in cfg.lambda_rows()] == ["SED-SFT", "SED-SFT (lam=2)", "SED-SFT (lam=4)"]
    assert Variant("gem").options == ()  # GEM keeps the registry's beta: nothing is passed for it
    assert DemoConfig.quick().variants() == [Variant("ce"), Variant("sed")]
    with pytest.raises(UserError, match="unknown objective 'nope'"):
        DemoConfig(objectives=("ce", "nope"))
    with pytest.raises(UserError, match="lam"):
        Variant("sed", options=(("lam", -1.0),))
    with pytest.raises(UserError, match="no option"):
        Variant("ce", options=(("lam", 2.0),))


def test_the_stage_list_counts_every_stage_once():
    cfg = DemoConfig.default()
    keys = [s.key for s in plan(cfg, cfg.variants())]
    assert len(keys) == len(set(keys))
    # base, data, analysis, base eval, heatmaps, weights, filter + 7 rows x 3 seeds x (sft, eval, rl, eval)
    assert len(keys) == 7 + 7 * 3 * 4
    assert keys.index("filter") > max(keys.index(f"sft/{v.key}/s2") for v in cfg.variants())
    assert len(plan(cfg, cfg.variants(), rl=False)) == 6 + 7 * 3 * 2


def test_report_has_every_table_row_and_column(tiny_run):
    root, res = tiny_run
    md = res.report_path.read_text()
    for title in (
        "## Table 1",
        "## Table 2",
        "## Lambda ablation",
        "## Effective gradient weights",
        "## What GRPO adds",
    ):
        assert title in md, title
    t1 = md.split("## Table 1")[1].split("## Table 2")[0]
    header = next(line for line in t1.splitlines() if line.startswith("| Model"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["Model", *SPLITS, "Avg"]
    for v in DemoConfig.tiny().variants():  # one row per variant in the SFT block and in the RL block
        rows = [line for line in t1.splitlines() if line.startswith(f"| {v.label} |")]
        assert len(rows) == 2, v
        for row in rows:
            cells = [float(c) for c in row.strip("|").split("|")[1:]]
            assert len(cells) == len(SPLITS) + 1 and all(0.0 <= c <= 100.0 for c in cells)
    lam = md.split("## Lambda ablation")[1].split("##")[0]
    assert "| 1 | SFT |" in lam and "| 4 | SFT+GRPO |" in lam and "- lambda 4 vs 1:" in lam
    assert "p* = 0.683" in md and "What the numbers say" in md and res.table.startswith("| Model |")


def test_figures_are_valid_pngs_with_data(tiny_run):
    root, res = tiny_run
    out = res.output_dir
    pngs = [
        "figures/sft_curves.png",
        "figures/rl_curves.png",
        "figures/topk/topk.png",
        "figures/weights/weights.png",
        "figures/heatmap_base.png",
        "figures/heatmap_ce_sft.png",
        "figures/heatmap_sed_sft.png",
    ]
    for p in pngs:
        w, h = _png_size(out / p)
        assert w > 100 and h > 100, p
        assert f"]({p})" in res.report_path.read_text(), p
    assert (out / "figures/sft_curves.csv").read_text().startswith("row,seed,step,loss")
    assert (out / "figures/rl_curves.csv").read_text().startswith("row,seed,step,reward")


def test_results_json_records_numbers_seeds_versions_and_times(tiny_run):
    root, res = tiny_run
    r = json.loads(res.results_path.read_text())
    for key in ("config", "rows", "seeds", "versions", "stage_seconds", "table", "stages", "rl_gains"):
        assert key in r, key
    assert r["seeds"] == [0] and set(r["versions"]) == {"python", "torch", "transformers", "trl", "sedsft"}
    assert set(r["stage_seconds"]) == {s.key for s in plan(DemoConfig.tiny(), DemoConfig.tiny().variants())}
    assert r["stages"]["sft/sed/s0"]["tau"] is not None and r["stages"]["sft/ce/s0"]["tau"] is None
    assert r["stages"]["base"]["source"] == "trained"  # the tiny config has no packaged model
    for entry in r["table"].values():
        assert 0.0 <= entry["avg"]["mean"] <= 1.0
        for m in entry["splits"].values():
            assert 0.0 <= m["accuracy"]["mean"] <= 1.0 and 0.0 <= m["coverage"]["mean"] <= 4.0
    # the trainer's own logs are what the curves and the measured w show
    metrics = [
        json.loads(line)
        for line in (res.output_dir / "sft/sed_lam4/s0/sedsft_metrics.jsonl").read_text().splitlines()
    ]
    logged = [m for m in metrics if "mask_weight" in m]
    assert logged and r["stages"]["weights"]["measured"]["SED-SFT (lam=4)"]["mask_weight"] == pytest.approx(
        sum(m["mask_weight"] for m in logged) / len(logged)
    )
    assert len(r["stages"]["rl/ce/s0"]["rewards"]) == DemoConfig.tiny().rl_steps


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
    # one more seed for one row: only its stages run
    ce = DemoConfig.tiny(objectives=("ce",), sed_lambdas=())
    more = run_demo(
        ce.with_rows(seeds=2), output_dir=first.output_dir, cache_dir=root / "cache", progress=False
    )
    assert sorted(more.computed) == sorted(["sft/ce/s1", "eval/sft/ce/s1", "rl/ce/s1", "eval/rl/ce/s1"])
    # a fresh folder, in this process (jobs=1), gives the same numbers as the two workers did (one row
    # suffices: rows are independent)
    fresh = run_demo(ce, output_dir=root / "out2", cache_dir=root / "cache", progress=False, report=False)
    for key in ("eval/base/base/s0", "eval/sft/ce/s0", "eval/rl/ce/s0"):
        assert fresh.results["stages"][key]["splits"] == first.results["stages"][key]["splits"], key


def test_a_folder_with_other_budgets_is_refused_and_overwrite_replaces_it(tiny_run):
    from sedsft.demo.pipeline import run_demo

    root, first = tiny_run
    with pytest.raises(UserError, match="sft_steps 4 -> 5"):
        run_demo(
            DemoConfig.tiny(sft_steps=5),
            output_dir=first.output_dir,
            cache_dir=root / "cache",
            progress=False,
        )
    out = root / "out2"  # made by the resume test: CE only
    (out / "stray.txt").write_text("from the old run")
    other = DemoConfig.tiny(objectives=("ce",), sed_lambdas=(), sft_steps=1)
    res = run_demo(
        other,
        output_dir=out,
        cache_dir=root / "cache",
        progress=False,
        rl=False,
        report=False,
        overwrite=True,
    )
    assert "sft/ce/s0" in res.computed and not (out / "stray.txt").exists() and not (out / "rl").exists()


def test_cli_bad_arguments_give_one_line(capsys):
    from sedsft.cli import main

    assert main(["demo", "--objectives", "ce,nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err
    assert main(["demo", "--seeds", "0"]) == 2
    assert "seeds" in capsys.readouterr().err
    assert main(["demo", "--sed_lambdas", "1,two"]) == 2
    assert "--sed_lambdas" in capsys.readouterr().err


def test_cli_options_build_the_config():
    from sedsft.demo.cli import DemoArgs

    cfg = DemoArgs(quick=True, objectives="sed,ce", sed_lambdas="1,4", seeds=2).config()
    assert cfg.name == "quick" and cfg.objectives == ("sed", "ce") and cfg.seeds == 2
    assert [v.key for v in cfg.variants()] == ["sed", "ce", "sed_lam4"]
    assert DemoArgs(sed_lambdas="none").config().sed_lambdas == ()
    assert DemoArgs().config() == DemoConfig.default()


def test_sweep_point_exists_with_the_sweep_signature():
    import inspect

    from sedsft.analysis.sweep_cli import load_pipeline

    fn = load_pipeline("demo")
    params = inspect.signature(fn).parameters
    assert list(params)[:3] == ["mask_ratio", "top_k", "lam"] and "output_dir" in params


def test_sweep_point_runs_sed_with_the_given_r_k_and_lambda(tiny_run):
    from sedsft.demo.pipeline import sweep_point

    root, _ = tiny_run
    out = root / "sweep"
    got = sweep_point(0.5, 3, 2.0, output_dir=out, cache_dir=root / "cache", config=DemoConfig.tiny())
    assert set(got) == {*SPLITS, "avg"} and all(0.0 <= v <= 1.0 for v in got.values())
    folder = out / "sft/sed_top_k3_lam2_mask_ratio0.5/s0"
    cal = json.loads((folder / "sedsft_calibration.json").read_text())
    assert cal["spec"]["top_k"] == 3 and cal["spec"]["mask_ratio"] == 0.5
    assert json.loads((folder / "sedsft_summary.json").read_text())["options"]["lam"] == 2.0
