"""Interruptions for resume tests: a kill in the middle of writing a JSONL log, at a chosen write."""

from __future__ import annotations

import json

from sedsft.io import JsonlLog


def kill_mid_write(monkeypatch, *, at_write: int) -> None:
    """From now on, the ``at_write``-th ``JsonlLog.extend`` writes one whole line and half of the next,
    then raises KeyboardInterrupt (as a kill during the write leaves the file); earlier writes are normal.
    ``monkeypatch.undo()`` restores the real writer."""
    real_extend, calls = JsonlLog.extend, []

    def extend(self, records):
        calls.append(1)
        if len(calls) < at_write:
            return real_extend(self, records)
        lines = [json.dumps(r) + "\n" for r in records]
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(lines[0] + lines[1][: len(lines[1]) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(JsonlLog, "extend", extend)
