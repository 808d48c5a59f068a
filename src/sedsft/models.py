"""Loading a causal LM and its tokenizer from a local folder: the one place every command does it.

Nothing is fetched from a model hub (``local_files_only``), ``trust_remote_code`` stays off unless the
user asks, and a folder that is not a checkpoint, has truncated weights, needs its own Python code, has
no tokenizer or no chat template, or names a device this machine does not have gets one line saying
what to change. :func:`check_model` finds all of that without loading the weights, so commands call it
before they open their output folder. ``sedsft sft`` and ``sedsft grpo`` load through here too
(attention implementation, k-bit quantization, a chat template file), leaving the model where the
Trainer places it.
"""

from __future__ import annotations

import os

from sedsft.errors import UserError

DTYPES = ("auto", "float32", "bfloat16", "float16")

# Any of these in a folder means a tokenizer was saved there (fast, sentencepiece, BPE or WordPiece).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
)


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
        hint = _checkpoint_hint(path)
        raise UserError(
            f"{flag} {path} is not a checkpoint folder (no config.json there)" + (f"; {hint}" if hint else "")
        )
    check_weight_files(path)
    return path


# weight files Transformers reads from a folder; a sharded checkpoint lists its shards in *.index.json
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def _checkpoint_hint(path: str) -> str | None:
    """What to pass instead of an sft/grpo run folder stopped before its final save: its last checkpoint."""
    from sedsft.runs import last_checkpoint

    last = last_checkpoint(path)
    return f"it holds training checkpoints: pass one, e.g. --model {last}" if last else None


def check_weight_files(path: str) -> None:
    """Refuse a folder without weights, with shards its index lists missing, or with ``*.safetensors``
    files cut short or not safetensors (only their headers and sizes are read)."""
    import json

    from safetensors import SafetensorError, safe_open

    names = sorted(os.listdir(path))
    if not any(n.endswith(WEIGHT_SUFFIXES) for n in names):
        what = _checkpoint_hint(path) or "copy or download the whole checkpoint"
        raise UserError(
            f"{path} has config.json but no weights (no {', '.join('*' + s for s in WEIGHT_SUFFIXES[:2])} "
            f"file); {what}"
        )
    for index in (n for n in names if n.endswith(".index.json")):
        try:
            with open(os.path.join(path, index), encoding="utf-8") as f:
                shards = set(json.load(f)["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise UserError(f"{os.path.join(path, index)} is not a shard index ({_first_line(e)})") from None
        missing = sorted(shards - set(names))
        if missing:
            raise UserError(
                f"{path} lacks {len(missing)} of the {len(shards)} weight shards its {index} lists "
                f"({missing[0]}, ...); the download is incomplete: download the rest"
            )
    for name in names:
        if not name.endswith(".safetensors"):
            continue
        try:
            with safe_open(os.path.join(path, name), framework="pt"):
                pass
        except (SafetensorError, OSError) as e:
            raise UserError(
                f"weights file {os.path.join(path, name)} is damaged ({_first_line(e)}); the copy or download "
                "was probably cut short: copy or download it again"
            ) from None


def check_tokenizer_folder(path: str | os.PathLike, *, flag: str = "--model") -> str:
    """``path`` if it holds a saved tokenizer; else a UserError saying where to get one."""
    path = str(path)
    if not os.path.isdir(path):
        raise UserError(f"{flag} folder not found: {path}")
    if not any(os.path.isfile(os.path.join(path, name)) for name in TOKENIZER_FILES):
        raise UserError(
            f"{path} has no tokenizer (none of {', '.join(TOKENIZER_FILES[:3])}, ...); save it there with "
            "tokenizer.save_pretrained(...) or pass --tokenizer FOLDER"
        )
    return path


def check_model(
    path: str | os.PathLike | None,
    *,
    tokenizer_path: str | os.PathLike | None = None,
    trust_remote_code: bool = False,
    chat_template_path: str | os.PathLike | None = None,
    system_prompt: str | None = None,
    flag: str = "--model",
) -> str:
    """``path`` once everything but the weights' values is known to load: the folder and its weight files,
    the model's config (custom code needs ``trust_remote_code``), and a tokenizer with a chat template
    that renders a prompt (with ``system_prompt``, the command's system turn).

    Cheap (no weights are read), so a command calls it before it writes anything."""
    from transformers import AutoConfig

    path = check_local_model(path, flag=flag)
    try:
        AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
    except (OSError, ValueError) as e:
        raise _load_error("model", path, e) from e
    load_tokenizer(
        tokenizer_path or path,
        trust_remote_code=trust_remote_code,
        chat_template_path=chat_template_path,
        system_prompt=system_prompt,
        flag="--tokenizer" if tokenizer_path else flag,
    )
    return path


# attention implementations that need a package of their own, and its pip name
ATTENTION_PACKAGES = {
    "flash_attention_2": ("flash_attn", "flash-attn"),
    "flash_attention_3": ("flash_attn_interface", "flash-attn-3"),
}


def check_attention(name: str | None, *, flag: str = "--attn_implementation") -> None:
    """Refuse an attention implementation this machine cannot run (before any output is written)."""
    import importlib.util

    import torch

    if name not in ATTENTION_PACKAGES:
        return
    module, package = ATTENTION_PACKAGES[name]
    if not torch.cuda.is_available():
        raise UserError(f"{flag} {name} runs on CUDA GPUs only; use {flag} sdpa here")
    if importlib.util.find_spec(module) is None:
        raise UserError(
            f"{flag} {name} needs the {package} package (not installed); pip install it or use sdpa"
        )


def check_peft_targets(path: str, peft_config, *, trust_remote_code: bool = False) -> None:
    """Refuse LoRA target modules the model does not have, on an empty (meta) copy of it: no weights read."""
    if peft_config is None:
        return
    import warnings

    from accelerate import init_empty_weights
    from peft import get_peft_model
    from peft.utils.error import NoMatchingPeftModuleError
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
    with init_empty_weights(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        try:
            get_peft_model(model, peft_config)
        except NoMatchingPeftModuleError as e:
            raise UserError(
                f"--lora_target_modules: {_first_line(e)} ({path}); name modules of this model, or pass all-linear"
            ) from None


def load_tokenizer(
    path: str | os.PathLike,
    *,
    trust_remote_code: bool = False,
    chat_template_path: str | os.PathLike | None = None,
    system_prompt: str | None = None,
    flag: str = "--model",
):
    """The tokenizer saved in ``path``, with the template of ``chat_template_path`` when given.

    Every sedsft command renders chat prompts, so a tokenizer without a chat template, or one that cannot
    render a prompt (with ``system_prompt`` when given), is refused here."""
    from transformers import AutoTokenizer

    tok_dir = check_tokenizer_folder(path, flag=flag)
    if chat_template_path is not None and not os.path.isfile(chat_template_path):
        raise UserError(f"--chat_template_path {chat_template_path} is not a file; pass a local .jinja file")
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            tok_dir, trust_remote_code=trust_remote_code, local_files_only=True
        )
    except (
        OSError,
        ValueError,
        KeyError,
    ) as e:  # unreadable or incomplete tokenizer files in the user's folder
        raise _load_error("tokenizer", tok_dir, e) from e
    if chat_template_path is not None:
        try:
            with open(chat_template_path, encoding="utf-8") as f:
                tokenizer.chat_template = f.read()
        except UnicodeDecodeError:
            raise UserError(f"--chat_template_path {chat_template_path} is not UTF-8 text") from None
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            f"the tokenizer in {tok_dir} has no chat template, and sedsft renders every prompt with one; use "
            f"a chat/instruct model's tokenizer, or save a Jinja chat template as {tok_dir}/chat_template.jinja"
        )
    where = (
        f"--chat_template_path {chat_template_path}" if chat_template_path else f"the tokenizer in {tok_dir}"
    )
    check_chat_template(tokenizer, where=where, system_prompt=system_prompt)
    return tokenizer


def check_chat_template(tokenizer, *, where: str, system_prompt: str | None = None) -> None:
    """Render one prompt, as the commands will: a broken template, or one that refuses a system turn, is
    one line (with what to change) before any work starts. ``where`` names the template's source."""
    from jinja2 import TemplateError

    from sedsft.prompts import build_messages

    def render(system):
        messages = build_messages("What is 1 + 1?", system_prompt=system)
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    try:
        render(system_prompt)
    except TemplateError as e:
        if system_prompt is not None:
            try:
                render(None)
            except TemplateError:
                pass
            else:
                raise UserError(
                    f"the chat template of {where} refuses a system turn ({_first_line(e)}); "
                    "pass --system_prompt none"
                ) from None
        raise UserError(
            f"the chat template of {where} cannot render a prompt ({_first_line(e)}); fix it "
            "or use the model's own"
        ) from None


def _load_error(what: str, path: str, e: BaseException) -> UserError:
    """The one line for a model or tokenizer Transformers cannot load from a local folder."""
    if "trust_remote_code" in str(e):  # Transformers' refusal to run the folder's own Python code
        return UserError(
            f"{path} ships its own Python code for its {what} (auto_map in its config); sedsft runs it only "
            "with --trust_remote_code: read that code first, or use a model Transformers supports"
        )
    detail = f"its files lack the field {e}" if isinstance(e, KeyError) else _first_line(e)
    return UserError(f"cannot load the {what} in {path}: {detail}")


def torch_dtype(name: str):
    """'auto' or a torch dtype for one of :data:`DTYPES`."""
    import torch

    if name not in DTYPES:
        raise UserError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return name if name == "auto" else getattr(torch, name)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str | None, *, flag: str = "--device") -> str | None:
    """``device`` if this machine has it (None or "auto": the default device, chosen at load time)."""
    if device is None or device == "auto":
        return None
    import torch

    try:
        d = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise UserError(f"{flag} {device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if d.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build of torch" if torch.version.cuda is None else "no GPU visible"
            raise UserError(f"{flag} {device}: this machine has no CUDA device ({build}); use --device cpu")
        count = torch.cuda.device_count()
        if d.index is not None and d.index >= count:
            raise UserError(
                f"{flag} {device}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}; pick one"
            )
    elif d.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise UserError(f"{flag} {device}: MPS is not available on this machine; use --device cpu")
    elif d.type != "cpu":
        raise UserError(f"{flag} {device!r}: sedsft runs on cpu, cuda or mps")
    return device


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load_local_model(
    path: str | os.PathLike,
    *,
    tokenizer_path: str | os.PathLike | None = None,
    dtype: str = "auto",
    device: str | None = None,
    place: bool = True,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    quantization_config=None,
    device_map=None,
    chat_template_path: str | os.PathLike | None = None,
    init_kwargs: dict | None = None,
    flag: str = "--model",
):
    """(model, tokenizer) from local folders.

    With ``place`` (inference: calibrate, analyze, eval, filter) the model is moved to ``device`` (CUDA
    when there) in eval mode; without it (training) it stays where ``from_pretrained`` put it, for the
    Trainer to place. ``chat_template_path``: a Jinja file that replaces the tokenizer's chat template.
    ``init_kwargs``: more ``from_pretrained`` options (GRPOConfig's ``model_init_kwargs``).
    """
    from transformers import AutoModelForCausalLM

    path = check_local_model(path, flag=flag)
    device = check_device(device)
    tokenizer = load_tokenizer(
        tokenizer_path or path,
        trust_remote_code=trust_remote_code,
        chat_template_path=chat_template_path,
        flag="--tokenizer" if tokenizer_path else flag,
    )
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=torch_dtype(dtype),
            trust_remote_code=trust_remote_code,
            local_files_only=True,
            attn_implementation=attn_implementation,
            quantization_config=quantization_config,
            device_map=device_map,
            **(init_kwargs or {}),
        )
    except (OSError, ValueError) as e:  # missing weights, an unknown model type, a bad option for this model
        raise _load_error("model", path, e) from e
    if not place:
        return model, tokenizer
    return model.to(device or default_device()).eval(), tokenizer


def load_training_model(
    model_args, *, trust_remote_code: bool = False, chat_template_path=None, init_kwargs: dict | None = None
):
    """(model, tokenizer) for training from TRL's ModelConfig: dtype, attention, k-bit quantization.

    ``init_kwargs`` (GRPOConfig's ``model_init_kwargs``) win over ModelConfig's values. k-bit weights
    go to this process's GPU at load time (as TRL's scripts do); anything else stays where
    ``from_pretrained`` puts it, for the Trainer to place.
    """
    from trl import get_quantization_config

    kwargs = dict(init_kwargs or {})
    quantization = kwargs.pop("quantization_config", None) or get_quantization_config(model_args)
    default_map = {"": int(os.environ.get("LOCAL_RANK", "0"))} if quantization is not None else None
    return load_local_model(
        model_args.model_name_or_path,
        dtype=kwargs.pop("dtype", None) or model_args.dtype or "auto",
        place=False,
        trust_remote_code=kwargs.pop("trust_remote_code", trust_remote_code),
        attn_implementation=kwargs.pop("attn_implementation", None) or model_args.attn_implementation,
        quantization_config=quantization,
        device_map=kwargs.pop("device_map", default_map),
        chat_template_path=chat_template_path,
        init_kwargs=kwargs,
    )
