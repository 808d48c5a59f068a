"""Tiny local model, tokenizer and data for the training tests: nothing is downloaded.

The tokenizer is a ``tokenizers`` WordLevel model over single characters plus the ChatML specials, with
a ChatML chat template; the model is a 2-layer random Llama (no dropout) with an untied LM head.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from ..tiny import char_tokenizer, tiny_llama

tiny_tokenizer = char_tokenizer
ROOT = Path(__file__).resolve().parents[2]


def torchrun(
    module: str, *args: str, procs: int = 2, timeout: int = 420, **env: str
) -> subprocess.CompletedProcess:
    """``torchrun -m module args`` with ``procs`` local processes (gloo, one thread each) on a free port.

    The port is picked by the OS, so two test runs on one machine never collide; this checkout's sedsft
    is the one imported, not an installed copy.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **env}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs)]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(port), "-m", module, *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def save_tiny_checkpoint(path: Path) -> Path:
    """Untied head, no dropout: the accumulation and resume tests compare updates exactly."""
    tok = char_tokenizer()
    tiny_llama(
        tok, tie_word_embeddings=False, attention_dropout=0.0, max_position_embeddings=256
    ).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def tiny_records(n: int = 16) -> list[dict]:
    """Arithmetic questions with short worked answers; a mix of layouts."""
    out = []
    for i in range(n):
        a, b = i % 7 + 1, (3 * i) % 5 + 2
        q, r = f"What is {a}+{b}?", f"{a} plus {b} is {a + b}. \\boxed{{{a + b}}}"
        out.append({"question": q, "response": r} if i % 2 else {"problem": q, "solution": r})
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
