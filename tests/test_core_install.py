"""The lean core: a fresh virtualenv holding sedsft's wheel and only its core dependencies imports
``sedsft.losses`` and ``sedsft.patch`` and runs a patched training step, with TRL and the other extras absent.

How the environment is made (a full ``pip install torch && pip install sedsft`` takes a few minutes
here, most of it unpacking torch): sedsft is built into a wheel and pip installs it, without dependencies,
into a new venv. The venv sees the dependencies through a ``.pth`` file naming a folder of links to the
already-installed distributions of the *core closure*: the wheel's own ``Requires-Dist`` without extras,
followed recursively through each distribution's requirements (markers evaluated). Anything outside that
closure (TRL, datasets, math-verify, sacrebleu, matplotlib, accelerate, peft, pyarrow) is not there at all,
so a core dependency added by mistake shows up as a present extra, and an import of an extra from the core
modules fails. The slow, complete variant is ``SEDSFT_FULL_CORE_INSTALL=1`` (a real resolver install).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("trl", "datasets", "math_verify", "sacrebleu", "matplotlib", "accelerate", "peft", "pyarrow")

STEP = """
import importlib.util, sys
import torch
from transformers import LlamaConfig, LlamaForCausalLM
import sedsft, sedsft.losses as losses

present = [m for m in {extras!r} if importlib.util.find_spec(m) is not None]
assert not present, f"extras in the core environment: {{present}}"
assert sedsft.__file__.startswith(sys.prefix), sedsft.__file__  # the installed wheel, not the checkout
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=1)
model = LlamaForCausalLM(cfg)
ids = torch.randint(0, 50, (2, 8))
want = losses.sed(model(ids).logits, ids, tau=0.1, num_items_in_batch=20)
sedsft.patch(model, "sed", tau=0.1)
out = model(ids, labels=ids, num_items_in_batch=20)
out.loss.backward()
torch.optim.SGD(model.parameters(), lr=0.1).step()
assert out.logits is None
torch.testing.assert_close(out.loss.detach(), want.detach())
print("core step ok", sorted(sedsft.patched(model).stats()))
"""


def _core_closure(wheel: Path) -> set[str]:
    """Canonical names of the distributions the wheel's core requirements bring, recursively."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [line.split(":", 1)[1].strip() for line in z.read(meta).decode().splitlines()
                    if line.startswith("Requires-Dist:")]  # fmt: skip
    seen: set[str] = set()
    todo = [Requirement(r) for r in requires]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        todo += [Requirement(r) for r in (md.distribution(req.name).requires or [])]
    return seen


def _link_distributions(names: set[str], view: Path) -> None:
    """``view``: a link to every top-level file or folder (and the .dist-info) of each named distribution."""
    view.mkdir()
    for dist in md.distributions():
        if canonicalize_name(dist.metadata["Name"]) not in names:
            continue
        base = Path(dist.locate_file(""))
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            src = base / top
            if src.exists() and not (view / top).exists() and top != "..":
                (view / top).symlink_to(src)


def _have_build_backend() -> bool:
    from packaging.version import Version

    try:
        return Version(md.version("setuptools")) >= Version("69") and bool(md.version("wheel"))
    except md.PackageNotFoundError:
        return False


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, **kw)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"  # a copy: setuptools writes build/ and *.egg-info next to the sources it builds
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    # pyproject's build requirements already here: build without fetching them (else pip's isolated build)
    isolation = ["--no-build-isolation"] if _have_build_backend() else []
    res = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(out), str(source)],
               cwd=out)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return next(out.glob("sedsft-*.whl"))


def test_core_install_runs_a_patched_step_without_the_extras(tmp_path, wheel):
    closure = _core_closure(wheel)
    assert {"torch", "transformers"} <= closure
    assert not closure & {canonicalize_name(m) for m in EXTRAS}
    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", "--without-pip", str(venv)]).returncode == 0
    view = tmp_path / "core-site"
    _link_distributions(closure, view)
    py = _venv_python(venv)
    site = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    Path(site, "core_deps.pth").write_text(f"{view}\n")
    res = _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                str(wheel)])  # fmt: skip
    assert res.returncode == 0, res.stderr
    res = _run([str(py), "-c", STEP.format(extras=EXTRAS)], cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "core step ok" in res.stdout and "mask_rate" in res.stdout
    # a command that needs an extra: one line naming it, exit status 2
    res = _run([str(venv / "bin" / "sedsft"), "sft", "--help"], cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip() == (
        'sedsft sft: error: trl is not installed (the core install leaves it out): pip install "sedsft[train]"'
    )


@pytest.mark.skipif(not os.environ.get("SEDSFT_FULL_CORE_INSTALL"), reason="set SEDSFT_FULL_CORE_INSTALL=1")
def test_full_core_install(tmp_path, wheel):
    """``python -m venv``, ``pip install torch==2.13.0``, ``pip install sedsft``: a few minutes."""
    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    py = str(_venv_python(venv))
    for spec in ("torch==2.13.0", str(wheel)):
        res = _run([py, "-m", "pip", "install", "-q", spec])
        assert res.returncode == 0, res.stderr
    res = _run([py, "-c", STEP.format(extras=EXTRAS)], cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
