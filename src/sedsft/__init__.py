"""sedsft: Selectively Encouraging Diversity in Supervised Fine-Tuning.

Objectives (``sedsft.losses``), the fused LM-head engine, tau calibration (``sedsft.calibrate``),
``sedsft.patch(model)`` for any training loop, SFT and GRPO training on Transformers/TRL, the paper's
math evaluation and analysis, and a CPU demo.

Nothing is imported here eagerly: ``import sedsft.losses`` needs torch only, ``sedsft.patch`` torch and
Transformers; the training, RL and evaluation modules need the extras (``pip install "sedsft[all]"``).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it, imported on first use (sedsft.patching holds the patch,
# under another name than the function: a submodule called ``patch`` would shadow ``sedsft.patch``)
_LAZY = {
    "patch": "sedsft.patching",
    "unpatch": "sedsft.patching",
    "patched": "sedsft.patching",
    "Patch": "sedsft.patching",
    "PatchStatsCallback": "sedsft.patching",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sedsft' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
