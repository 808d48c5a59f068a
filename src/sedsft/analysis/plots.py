"""Headless figures: matplotlib ``Figure`` objects rendered by Agg, written atomically as PNG.

No ``pyplot`` and no global backend switch: a ``Figure`` made directly renders through Agg when saved,
so the analysis works the same on a server, in a notebook or inside the demo, and leaves the caller's
matplotlib state alone. Every figure the package writes also has its numbers written next to it
(CSV/JSON) by the module that draws it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from matplotlib.figure import Figure

from sedsft.io import atomic_write_bytes

DPI = 120


def new_figure(width_in: float, height_in: float) -> Figure:
    """A figure with constrained layout (titles and colour bars never overlap the axes)."""
    return Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")


def save_png(fig: Figure, path: str | os.PathLike) -> Path:
    """Render ``fig`` with Agg and write it to ``path`` atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return atomic_write_bytes(path, buf.getvalue())
