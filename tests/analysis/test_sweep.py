"""The r/k sweep: resumes without recomputing, writes its tables and figure, and loads pipelines safely."""

from __future__ import annotations

import json

import pytest

from sedsft.analysis.sweep import POINTS_LOG, SweepPoint, grid, run_sweep
from sedsft.analysis.sweep_cli import load_pipeline, parse_grid
from sedsft.errors import UserError

from .helpers import check_png


class Stub:
    def __init__(self, fail_at=None):
        self.calls, self.fail_at = [], fail_at

    def __call__(self, r, k):
        if (r, k) == self.fail_at:
            raise RuntimeError("pipeline crashed")
        self.calls.append((r, k))
        return {"aime": 10 * r + k, "math": 50 - k, "avg": 5 * r + 25}


def test_resume_does_not_recompute(tmp_path):
    points = grid([0.5, 0.7, 0.9], [2, 3])
    first = Stub(fail_at=(0.7, 3))
    with pytest.raises(RuntimeError):
        run_sweep(points, first, output_dir=tmp_path)
    assert first.calls == [(0.5, 2), (0.5, 3), (0.7, 2)]
    assert "| 0.7 | 2 |" in (tmp_path / "sweep_table.md").read_text()  # partial outputs already written

    second = Stub()
    res = run_sweep(points, second, output_dir=tmp_path)
    assert second.calls == [(0.7, 3), (0.9, 2), (0.9, 3)]
    assert [p.key for p in res.reused] == [
        SweepPoint(0.5, 2).key,
        SweepPoint(0.5, 3).key,
        SweepPoint(0.7, 2).key,
    ]
    assert len(res.rows) == 6 and res.metric == "avg"

    third = Stub()
    res = run_sweep(
        points + [SweepPoint(0.70000001, 2)], third, output_dir=tmp_path
    )  # same key after rounding
    assert third.calls == [] and len(res.rows) == 6
    assert len((tmp_path / POINTS_LOG).read_text().splitlines()) == 6
    check_png(tmp_path / "sweep_heatmap.png")
    table = (tmp_path / "sweep_table.md").read_text()
    assert "| r | k | aime | math | avg |" in table and "| 0.9 | 3 | 12 | 47 | 29.5 |" in table
    grid_csv = (tmp_path / "sweep_grid.csv").read_text().splitlines()
    assert grid_csv[0] == "mask_ratio,top_k,avg" and len(grid_csv) == 7


def test_torn_log_line_is_rerun(tmp_path):
    run_sweep([(0.5, 2)], Stub(), output_dir=tmp_path)
    with open(tmp_path / POINTS_LOG, "a") as f:
        f.write('{"key": "r=0.7,k=2", "mask_')  # a writer killed mid-line
    stub = Stub()
    res = run_sweep([(0.5, 2), (0.7, 2)], stub, output_dir=tmp_path)
    assert stub.calls == [(0.7, 2)] and len(res.rows) == 2
    assert all(json.loads(line) for line in (tmp_path / POINTS_LOG).read_text().splitlines())


def test_summary_metric_and_bad_outputs(tmp_path):
    res = run_sweep([(0.5, 2), (0.5, 3)], lambda r, k: {"acc": r * k, "div": k}, output_dir=tmp_path / "a")
    assert res.metric == "mean of metrics" and res.rows[0]["metrics"] == {"acc": 1.0, "div": 2.0}
    with pytest.raises(UserError, match="metric 'nope' is missing"):
        run_sweep([(0.5, 2)], lambda r, k: {"acc": 1.0}, output_dir=tmp_path / "b", metric="nope")
    with pytest.raises(UserError, match="must be numbers"):
        run_sweep([(0.5, 2)], lambda r, k: {"acc": "high"}, output_dir=tmp_path / "c")
    with pytest.raises(UserError, match="mask_ratio"):
        grid([1.5], [2])
    with pytest.raises(UserError, match="top_k"):
        grid([0.5], [0])


def test_grid_parsing_and_pipeline_loading(tmp_path, monkeypatch):
    assert parse_grid(["r=0.5,0.7", "k=2,3"]) == ([0.5, 0.7], [2, 3], None)
    assert parse_grid(["lam=1,4"]) == ([0.7], [2], [1.0, 4.0])  # r and k at the paper's values
    for bad in (["x=1", "k=2"], ["r=a", "k=2"], ["lam=", "k=2"], ["k=2", "k=3"]):
        with pytest.raises(UserError):
            parse_grid(bad)
    for bad in ("__import__('os').system('true')", "os.system", "a:b:c"):
        with pytest.raises(UserError, match="module:function"):
            load_pipeline(bad)
    with pytest.raises(UserError, match="no such module"):
        load_pipeline("not_a_module_xyz:run")
    (tmp_path / "my_sweep_pipeline.py").write_text("def run(r, k):\n    return {'avg': r + k}\n")
    monkeypatch.chdir(tmp_path)
    assert load_pipeline("my_sweep_pipeline:run")(0.5, 2) == {"avg": 2.5}
    with pytest.raises(UserError, match="no function"):
        load_pipeline("my_sweep_pipeline:missing")


class LamStub:
    def __init__(self):
        self.calls = []

    def __call__(self, r, k, lam=None):
        self.calls.append((r, k, lam))
        return {"acc": r + k + (lam or 0.0), "avg": lam or 0.0}


def test_lambda_axis_resumes_and_tabulates_a_grid_per_lambda(tmp_path):
    points = grid([0.5, 0.7], [2], [1.0, 4.0])
    assert [p.key for p in points] == [
        "r=0.5,k=2,lam=1.0",
        "r=0.5,k=2,lam=4.0",
        "r=0.7,k=2,lam=1.0",
        "r=0.7,k=2,lam=4.0",
    ]
    first = LamStub()
    run_sweep(points[:2], first, output_dir=tmp_path)
    assert first.calls == [(0.5, 2, 1.0), (0.5, 2, 4.0)]
    second = LamStub()
    res = run_sweep(points, second, output_dir=tmp_path)
    assert second.calls == [(0.7, 2, 1.0), (0.7, 2, 4.0)] and len(res.reused) == 2
    table = (tmp_path / "sweep_table.md").read_text()
    assert "| r | k | lam | acc | avg |" in table and "| 0.7 | 2 | 4 | 6.7 | 4 |" in table
    assert "avg by masking ratio r (rows) and top-k (columns), lambda = 1:" in table
    assert "avg by masking ratio r (rows) and top-k (columns), lambda = 4:" in table
    assert (tmp_path / "sweep_grid.csv").read_text().splitlines()[0] == "mask_ratio,top_k,lam,avg"
    check_png(tmp_path / "sweep_heatmap.png")
    # a point without lambda keeps the old key, so logs written before the lambda axis still resume
    assert SweepPoint(0.7, 2).key == "r=0.7,k=2" and SweepPoint(0.7, 2).args() == (0.7, 2)
    with pytest.raises(UserError, match="lam must be"):
        grid([0.5], [2], [-1.0])


def test_a_two_argument_pipeline_is_refused_for_a_lambda_grid(tmp_path, monkeypatch):
    from sedsft.analysis.sweep_cli import main

    (tmp_path / "two_args_pipeline.py").write_text("def run(r, k):\n    return {'avg': r + k}\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="takes only"):
        main(
            [
                "--pipeline",
                "two_args_pipeline:run",
                "--grid",
                "lam=1,2",
                "--output_dir",
                str(tmp_path / "o"),
            ]
        )
    assert (
        main(
            [
                "--pipeline",
                "two_args_pipeline:run",
                "--grid",
                "r=0.5",
                "k=2",
                "--output_dir",
                str(tmp_path / "p"),
            ]
        )
        == 0
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_pipeline_returning_nan_is_refused_naming_the_point(tmp_path, bad):
    def pipeline(r, k):
        return {"acc": bad if r == 0.7 else r, "avg": r}

    with pytest.raises(
        UserError, match=rf"metric 'acc' of r=0.7,k=2 is {bad}; the pipeline must return finite"
    ):
        run_sweep(grid([0.5, 0.7, 0.9], [2]), pipeline, output_dir=tmp_path)
    logged = [json.loads(line) for line in (tmp_path / POINTS_LOG).read_text().splitlines()]
    assert [rec["key"] for rec in logged] == ["r=0.5,k=2"]  # the point before it stays, nothing else
    table = (tmp_path / "sweep_table.md").read_text()
    assert "nan" not in table.lower() and "inf" not in table.lower() and "| 0.5 | 2 |" in table


def test_a_logged_nan_point_is_rerun(tmp_path):
    run_sweep([(0.5, 2)], Stub(), output_dir=tmp_path)
    with open(tmp_path / POINTS_LOG, "a") as f:  # what an older sedsft logged for a NaN result
        f.write('{"key": "r=0.7,k=2", "mask_ratio": 0.7, "top_k": 2, "lam": null, "metrics": {"avg": NaN}}\n')
    stub = Stub()
    res = run_sweep([(0.5, 2), (0.7, 2)], stub, output_dir=tmp_path)
    assert stub.calls == [(0.7, 2)] and res.rows[1]["metrics"]["avg"] == 5 * 0.7 + 25


def test_sweep_command_with_a_nan_pipeline_is_one_line(tmp_path, monkeypatch, capsys):
    from sedsft.cli import main

    (tmp_path / "nan_pipeline.py").write_text("def run(r, k):\n    return {'avg': float('nan')}\n")
    monkeypatch.chdir(tmp_path)
    argv = ["sweep", "--pipeline", "nan_pipeline:run", "--grid", "r=0.5", "k=2,3", "--output_dir", "out"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "sedsft sweep: error: metric 'avg' of r=0.5,k=2 is nan; the pipeline must return finite numbers "
        "(this point was not recorded; fix the pipeline and rerun to resume)"
    ]
    assert not (tmp_path / "out" / POINTS_LOG).exists() or not (tmp_path / "out" / POINTS_LOG).read_text()
