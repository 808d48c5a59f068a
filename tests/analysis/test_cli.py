"""The real `sedsft analyze` / `sedsft sweep` commands on a saved tiny model: outputs, and one-line errors."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from sedsft.cli import main


def _one_line_error(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1, err
    return err


def test_topk_command(model_dir, data_file, tmp_path, capsys):
    out = tmp_path / "topk"
    rc = main(
        [
            "analyze",
            "topk",
            "--model",
            str(model_dir),
            "--data",
            str(data_file),
            "--num_examples",
            "4",
            "--max_k",
            "3",
            "--output_dir",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    assert "tau(r=0.7)" in capsys.readouterr().out
    for name in ("topk.png", "topk_summary.csv", "topk_tau.csv", "topk_histogram.csv", "topk_summary.json"):
        assert (out / name).stat().st_size > 0


def test_heatmap_command(model_dir, data_file, tmp_path, capsys):
    out = tmp_path / "hm"
    rc = main(
        [
            "analyze",
            "heatmap",
            "--model",
            str(model_dir),
            "--data",
            str(data_file),
            "--index",
            "2",
            "--mask_ratio",
            "0.5",
            "--output_dir",
            str(out),
            "--system_prompt",
            "none",
        ]
    )
    assert rc == 0
    assert "tau = " in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {
        "heatmap_2.png",
        "heatmap_2.html",
        "heatmap_2.json",
        "sedsft_run.json",
    }
    out = tmp_path / "hm_text"
    rc = main(
        [
            "analyze",
            "heatmap",
            "--model",
            str(model_dir),
            "--question",
            "1+1?",
            "--response",
            "2 <ok>",
            "--tau",
            "0.4",
            "--output_dir",
            str(out),
        ]
    )
    page = (out / "heatmap_text.html").read_text()
    assert rc == 0 and ">&lt;</span>" in page and "<ok>" not in page


def test_bad_input_is_one_line(model_dir, data_file, tmp_path, capsys):
    err = _one_line_error(
        capsys, ["analyze", "topk", "--model", str(model_dir), "--data", str(tmp_path / "nope.jsonl")]
    )
    assert "not found" in err and "nope.jsonl" in err
    err = _one_line_error(
        capsys, ["analyze", "heatmap", "--model", str(model_dir), "--data", str(data_file), "--index", "6"]
    )
    assert "out of range" in err and "6 records" in err
    err = _one_line_error(
        capsys,
        [
            "analyze",
            "heatmap",
            "--model",
            str(tmp_path / "no_model"),
            "--data",
            str(data_file),
            "--index",
            "0",
        ],
    )
    assert "--model folder not found" in err
    err = _one_line_error(capsys, ["analyze", "topk", "--model", str(model_dir)])
    assert "--data" in err
    err = _one_line_error(
        capsys, ["analyze", "topk", "--model", str(model_dir), "--data", str(data_file), "--max_k", "0"]
    )
    assert "max_k must be an integer >= 1, got 0" in err
    err = _one_line_error(
        capsys,
        [
            "analyze",
            "heatmap",
            "--model",
            str(model_dir),
            "--data",
            str(data_file),
            "--index",
            "0",
            "--tau",
            "nan",
        ],
    )
    assert "tau must be a finite number >= 0" in err
    err = _one_line_error(
        capsys,
        ["analyze", "heatmap", "--model", str(model_dir), "--data", str(data_file), "--index", "0",
         "--tau", "0.5", "--mask_ratio", "0.7"],
    )  # fmt: skip
    assert "not both" in err
    err = _one_line_error(
        capsys, ["sweep", "--pipeline", "os.system", "--grid", "r=0.5", "k=2", "--output_dir", str(tmp_path)]
    )
    assert "module:function" in err
    err = _one_line_error(
        capsys, ["sweep", "--pipeline", "x:y", "--grid", "r=0.5", "q=2", "--output_dir", str(tmp_path)]
    )
    assert "k=" in err and "lam=" in err  # an axis the grid does not have


def test_sweep_command_resumes(tmp_path, monkeypatch, capsys):
    (tmp_path / "cli_pipeline_mod.py").write_text(
        "import json, pathlib\n"
        "CALLS = []\n"
        "def run(mask_ratio, top_k, *, output_dir):\n"
        "    CALLS.append((mask_ratio, top_k))\n"
        "    pathlib.Path(output_dir).mkdir(parents=True, exist_ok=True)\n"
        "    return {'acc': mask_ratio * 100, 'avg': mask_ratio * 100 - top_k}\n"
    )
    monkeypatch.chdir(tmp_path)
    argv = [
        "sweep",
        "--pipeline",
        "cli_pipeline_mod:run",
        "--mask_ratios",
        "0.5,0.9",
        "--top_ks",
        "2,3",
        "--output_dir",
        "out",
        "--unit",
        "%",
    ]
    assert main(argv) == 0
    mod = sys.modules["cli_pipeline_mod"]
    assert len(mod.CALLS) == 4 and (tmp_path / "out/points/r0.9_k3").is_dir()
    assert main(argv) == 0 and len(mod.CALLS) == 4
    assert "0 points run, 4 read back" in capsys.readouterr().out


@pytest.mark.skipif(
    importlib.util.find_spec("sedsft.demo.pipeline") is not None, reason="the demo pipeline exists"
)
def test_sweep_demo_pipeline_missing_is_clear(tmp_path, capsys):
    err = _one_line_error(
        capsys, ["sweep", "--pipeline", "demo", "--grid", "r=0.5", "k=2", "--output_dir", str(tmp_path)]
    )
    assert "demo pipeline" in err


def test_sweep_interrupted_then_resumed_equals_an_uninterrupted_run(tmp_path, monkeypatch, capsys):
    (tmp_path / "sweep_kill_mod.py").write_text(
        "import os\n"
        "def run(mask_ratio, top_k):\n"
        "    if os.environ.get('KILL_AT') == f'{mask_ratio},{top_k}':\n"
        "        raise KeyboardInterrupt\n"
        "    return {'acc': round(mask_ratio * 37 % 11, 3), 'avg': mask_ratio * 10 + top_k}\n"
        "def other(mask_ratio, top_k):\n"
        "    return {'avg': 0.0}\n"
    )
    monkeypatch.chdir(tmp_path)
    argv = ["sweep", "--pipeline", "sweep_kill_mod:run", "--grid", "r=0.5,0.7,0.9", "k=2,3"]
    assert main([*argv, "--output_dir", "whole"]) == 0
    monkeypatch.setenv("KILL_AT", "0.7,3")
    assert main([*argv, "--output_dir", "resumed"]) == 130
    monkeypatch.delenv("KILL_AT")
    assert main([*argv, "--output_dir", "resumed"]) == 0
    assert "3 points run, 3 read back" in capsys.readouterr().out
    for name in ("sweep_table.md", "sweep_results.csv", "sweep_grid.csv"):
        assert (tmp_path / "resumed" / name).read_text() == (tmp_path / "whole" / name).read_text()
    assert (
        main(
            ["sweep", "--pipeline", "sweep_kill_mod:other", "--grid", "r=0.5", "k=2", "--output_dir", "whole"]
        )
        == 2
    )
    assert 'pipeline "sweep_kill_mod:run" -> "sweep_kill_mod:other"' in capsys.readouterr().err
