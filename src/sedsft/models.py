"""Loading a causal LM and its tokenizer from a local folder: the one place every command does it.

Nothing is fetched from a model hub (``local_files_only``), ``trust_remote_code`` stays off unless the
user asks, and a path that is not a checkpoint folder gets one line saying what to do.
"""

from __future__ import annotations

import os

from sedsft.errors import UserError

DTYPES = ("auto", "float32", "bfloat16", "float16")


def check_local_model(path: str | os.PathLike | None, *, flag: str = "--model") -> str:
    """``path`` as a string if it is a local checkpoint folder (with config.json); else a UserError."""
    if not path:
        raise UserError(f"{flag} is required: a local folder with config.json and the weights")
    path = str(path)
    if not os.path.isdir(path):
        raise UserError(
            f"{flag} folder not found: {path} (not a checkpoint folder on this machine; sedsft does not "
            "download from the hub: download the model first, e.g. `hf download <repo> --local-dir <dir>`)"
        )
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise UserError(f"{flag} {path} is not a checkpoint folder (no config.json there)")
    return path


def torch_dtype(name: str):
    """'auto' or a torch dtype for one of :data:`DTYPES`."""
    import torch

    if name not in DTYPES:
        raise UserError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return name if name == "auto" else getattr(torch, name)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_local_model(
    path: str | os.PathLike,
    *,
    tokenizer_path: str | os.PathLike | None = None,
    dtype: str = "auto",
    device: str | None = None,
    trust_remote_code: bool = False,
    flag: str = "--model",
):
    """(model, tokenizer) from local folders, the model in eval mode on ``device`` (CUDA when there)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = check_local_model(path, flag=flag)
    if tokenizer_path is not None and not os.path.isdir(tokenizer_path):
        raise UserError(f"--tokenizer folder not found: {tokenizer_path}")
    tokenizer = AutoTokenizer.from_pretrained(
        str(tokenizer_path or path), trust_remote_code=trust_remote_code, local_files_only=True
    )
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code, local_files_only=True
    )
    return model.to(device or default_device()).eval(), tokenizer
