"""Files that survive interruptions: atomic writes and append-only JSONL logs that resume.

Long jobs (evaluation, filtering, sweeps, the demo) write each finished unit of work as one JSONL line
as soon as it is done, and on restart read back what is already there. Whole-file outputs (metrics,
reports, configs) are written atomically: to a temporary file in the same folder, then renamed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file in the same folder, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) so that readers see either the old file or the whole new one.

    Text UTF-8 cannot encode (a lone surrogate from a model's output) is written as its escape
    (``\\udc80``), never lost; in a JSON string that escape reads back as the same character."""
    return atomic_write_bytes(path, text.encode("utf-8", errors="backslashreplace"))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_jsonl_records(path: str | os.PathLike) -> Iterator[dict]:
    """Records of a JSONL log written by :class:`JsonlLog`, skipping a torn last line.

    A process killed mid-write can leave one incomplete final line; it is dropped (and rewritten
    by the resumed job). A malformed line anywhere else is an error: the log was edited or corrupted.
    """
    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as e:
            is_last = all(not rest.strip() for rest in lines[i + 1 :])
            if is_last:
                return
            raise ValueError(
                f"{path}:{i + 1}: corrupt JSONL record ({e.msg}); delete the file to start over"
            ) from e


class JsonlLog:
    """Append-only JSONL file: one record per finished unit of work, flushed and fsynced per write.

    >>> log = JsonlLog("out/samples.jsonl")
    >>> done = {r["key"] for r in log.records()}
    >>> log.append({"key": "p1/0", "response": "..."})
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_torn_tail()

    def _repair_torn_tail(self) -> None:
        # Truncate an incomplete last line left by a killed writer, so appends start on a fresh line.
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(cut)

    def records(self) -> list[dict]:
        return list(read_jsonl_records(self.path))

    def append(self, record: dict) -> None:
        self.extend([record])

    def extend(self, records: Iterable[dict]) -> None:
        lines = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
        if not lines:
            return
        with open(self.path, "a", encoding="utf-8", errors="backslashreplace") as f:  # as atomic_write_text
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())
