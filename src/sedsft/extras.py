"""The optional dependencies: which extra of ``pip install "sedsft[...]"`` brings each, and the one-line
message a command prints when its extra is not installed.

``pip install sedsft`` is the lean core (torch, Transformers: the losses, the fused engine, calibration and
``sedsft.patch``); the command line and the paper's pipeline need ``sedsft[train]`` / ``sedsft[eval]`` /
``sedsft[all]`` (pyproject.toml says why each dependency is there).
"""

from __future__ import annotations

import importlib.util

# top-level module -> the extra that installs it
EXTRA_OF: dict[str, str] = {
    "trl": "train",
    "accelerate": "train",
    "peft": "train",
    "datasets": "train",
    "yaml": "train",
    "pyarrow": "all",  # in both train and eval
    "tqdm": "all",
    "math_verify": "eval",
    "latex2sympy2_extended": "eval",
    "sacrebleu": "eval",
    "matplotlib": "eval",
    "deepspeed": "deepspeed",
    "vllm": "vllm",
}


def missing_extra_message(error: ModuleNotFoundError) -> str | None:
    """The one line for a missing optional dependency; None when ``error`` is about another module (a bug)."""
    top = (error.name or "").partition(".")[0]
    extra = EXTRA_OF.get(top)
    if extra is None:
        return None
    return f'{top} is not installed (the core install leaves it out): pip install "sedsft[{extra}]"'


def require(*modules: str) -> None:
    """Raise a ModuleNotFoundError naming the extra when one of ``modules`` is not installed."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            error = ModuleNotFoundError(f"No module named {module!r}", name=module)
            raise ModuleNotFoundError(missing_extra_message(error), name=module)
