"""A command whose optional dependency is missing ends with one line naming the extra; any other missing
module is a bug and keeps its traceback."""

from __future__ import annotations

import sys
import types

import pytest

from sedsft import cli


def _command(monkeypatch, missing: str) -> None:
    module = types.ModuleType("fake_command")

    def main(argv):
        raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)

    module.main = main
    monkeypatch.setitem(sys.modules, "fake_command", module)
    monkeypatch.setitem(cli.COMMANDS, "fake", ("fake_command", "a command for this test"))


@pytest.mark.parametrize(
    "missing, extra",
    [("trl", "train"), ("math_verify.parser", "eval"), ("matplotlib", "eval"), ("vllm", "vllm")],
)
def test_a_missing_extra_is_one_line(monkeypatch, capsys, missing, extra):
    _command(monkeypatch, missing)
    assert cli.main(["fake"]) == 2
    top = missing.split(".")[0]
    assert capsys.readouterr().err == (
        f'sedsft fake: error: {top} is not installed (the core install leaves it out): pip install "sedsft[{extra}]"\n'
    )


def test_another_missing_module_is_a_bug(monkeypatch):
    _command(monkeypatch, "sedsft_no_such_module")
    with pytest.raises(ModuleNotFoundError, match="sedsft_no_such_module"):
        cli.main(["fake"])
