"""sedsft.cli_parse: flags and YAML from dataclasses, one error format, shared options, strictness."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from sedsft.cli_parse import GradingOptions, ModelOptions, RunOptions, parse_command, system_prompt_value
from sedsft.errors import UserError, check_count, check_number


@dataclass
class Opts:
    data: str | None = field(default=None, metadata={"help": "data file"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    limit: int | None = field(default=None, metadata={"help": "first LIMIT records"})
    progress: bool = field(default=True, metadata={"help": "bars", "manifest": False})
    mode: str = field(default="a", metadata={"help": "mode", "choices": ["a", "b"]})
    tau: float | None = field(default=None, metadata={"help": "given threshold"})
    mask_ratio: float | None = field(default=None, metadata={"help": "ratio to calibrate with"})

    def __post_init__(self):
        check_number("temperature", self.temperature, low=0)
        check_count("limit", self.limit, allow_none=True)
        if self.tau is not None and self.mask_ratio is not None:
            raise UserError("give --tau or --mask_ratio, not both")


def parse(argv):
    return parse_command("t", argv, Opts, ModelOptions, GradingOptions, RunOptions)


def test_flags_yaml_and_overrides(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "data: x.jsonl\ntemperature: 1e-3\nlimit: 5\nmodel: ckpt\nmode: b\nno_progress_unused: 1\n"
    )
    with pytest.raises(UserError, match=r"c.yaml:6: unknown option 'no_progress_unused'"):
        parse(["--config", str(cfg)])
    cfg.write_text("data: x.jsonl\ntemperature: 1e-3\nlimit: 5\nmodel: ckpt\nmode: b\n")
    opts, model, grading, run = parse(["--config", str(cfg), "--limit", "3", "--no_progress"])
    assert (opts.data, opts.temperature, opts.limit, opts.mode, opts.progress) == (
        "x.jsonl",
        1e-3,
        3,
        "b",
        False,
    )
    assert model.model == "ckpt" and model.device is None and grading.grading_workers == 2
    assert run.overwrite is False
    assert parse(["--limit", "none"])[0].limit is None


BAD_ARGV = [
    (["--temperature", "nan"], "temperature must be a finite number >= 0, got nan"),
    (["--temperature", "inf"], "temperature must be a finite number >= 0, got inf"),
    (["--limit", "0"], "limit must be an integer >= 1 (or unset), got 0"),
    (["--grading_timeout", "nan"], "grading_timeout must be a finite number > 0"),
    (["--grading_workers", "-1"], "grading_workers must be an integer >= 0"),
    (["--temp", "1"], "unknown option --temp (did you mean --temperature?)"),
    (["--temperature", "1", "--temperature", "2"], "--temperature is given twice; give it once"),
    (["--progress", "--no_progress"], "--progress and --no_progress both set progress"),
    (["--tau", "0.5", "--mask_ratio", "0.7"], "give --tau or --mask_ratio, not both"),
    (["--mode", "c"], "invalid choice: 'c'"),
    (["--no_system_prompt"], "--no_system_prompt is not an option any more: use --system_prompt none"),
    (["stray"], "unexpected argument 'stray'"),
    (["--dtype", "int8"], "invalid choice: 'int8'"),
    (["--device", "cuda:7"], "--device cuda:7"),
    (["--device", "tpu"], "--device 'tpu'"),
    (["--config"], "--config needs a file"),
    (["--config", "/nonexistent/c.yaml"], "--config /nonexistent/c.yaml: no such file"),
]


@pytest.mark.parametrize("argv,message", BAD_ARGV, ids=[" ".join(a) for a, _ in BAD_ARGV])
def test_bad_flags_are_one_line_user_errors(argv, message):
    import torch

    if argv[:2] == ["--device", "cuda:7"] and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(UserError) as e:
        parse(argv)
    assert message in str(e.value) and "\n" not in str(e.value)


BAD_YAML = {
    "broken": ("data: x\ntemperature: [1\n", r"c.yaml:2: broken YAML"),
    "unknown key": (
        "data: x\ntemperatur: 1\n",
        r"c.yaml:2: unknown option 'temperatur' \(did you mean 'temperature'\?\)",
    ),
    "repeated key": ("data: x\ndata: y\n", r"c.yaml:2: 'data' is set twice"),
    "bad value": ("limit: many\n", r"c.yaml:1: limit: 'many' is not a valid int"),
    "bad choice": ("mode: c\n", r"c.yaml:1: mode must be one of a, b, got 'c'"),
    "not a mapping": ("- a\n- b\n", r"c.yaml: a config file is a mapping"),
    "two spellings": (
        "model: a\ntrust_remote_code: true\ntrust-remote-code: false\n",
        r"c.yaml:3: 'trust-remote-code' and 'trust_remote_code' both set",
    ),
    "validated": ("temperature: .nan\n", r"temperature must be a finite number"),
}


@pytest.mark.parametrize("case", list(BAD_YAML))
def test_bad_yaml_names_file_and_line(tmp_path, case):
    text, match = BAD_YAML[case]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(UserError, match=match):
        parse(["--config", str(cfg)])


def test_non_utf8_yaml(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"data: x\nmode: \xe9\n")
    with pytest.raises(UserError, match=r"c.yaml:2: not UTF-8 text"):
        parse(["--config", str(cfg)])


def test_system_prompt_has_one_spelling_for_none():
    assert [system_prompt_value(v) for v in (None, "", "  ", "none", "None", "Be brief.")] == [
        None, None, None, None, None, "Be brief."
    ]  # fmt: skip


def test_help_lists_the_fields(capsys):
    with pytest.raises(SystemExit) as e:
        parse(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "sampling temperature" in out and "--trust_remote_code" in out and "--config" in out
