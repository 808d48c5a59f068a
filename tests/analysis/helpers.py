"""Checks shared by the analysis tests."""

from __future__ import annotations

from matplotlib import image as mpimg


def check_png(path) -> None:
    """A real PNG of non-trivial size that matplotlib can read back, and not a blank canvas."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400
    assert img[..., :3].std() > 0.05
