"""One way to parse every ``sedsft`` command: config dataclasses -> flags, YAML ``--config`` under them.

A command lists the dataclasses that hold its options (TRL's convention: every field carries
``metadata={"help": ...}``; TRL's own SFTConfig/GRPOConfig/ModelConfig work unchanged) and gets them
back filled in and validated:

    @dataclass
    class FilterArgs:
        data: str | None = field(default=None, metadata={"help": "prompt file or folder"})
        limit: int | None = field(default=None, metadata={"help": "only the first LIMIT records"})

        def __post_init__(self):   # validation lives where the config is built: Python callers get it too
            check_count("limit", self.limit, allow_none=True)

    def main(argv):
        args, config, model, run = parse_command("filter", argv, FilterArgs, FilterConfig, ModelOptions, RunOptions)

A new option is a new field; nothing else changes. What the parser does, the same for every command:

- ``--config FILE.yaml`` sets any field (keys are field names or their flag spellings); flags given on
  the command line win over it. YAML values are converted and checked like flags; a broken YAML, a
  wrong value, an unknown or repeated key is refused naming the file and line.
- An unknown option is refused with the closest known one; an option given twice (or by two
  spellings, ``--progress`` and ``--no_progress``) is refused: no value silently wins.
- Options that exclude each other default to ``None`` and the dataclass's ``__post_init__`` refuses
  the pair (``--tau`` with ``--mask_ratio``); a ValueError raised while a config is built is input
  validation, so it is reported as a UserError.
- Every error is a :class:`~sedsft.errors.UserError` saying what to change; the dispatcher prints it as
  ``sedsft <command>: error: <message>`` and exits 2.

Shared options have one spelling everywhere, from the groups below: ``--model`` (sft/grpo also take
TRL's ``--model_name_or_path``), ``--dtype``, ``--device`` (refused when this machine lacks it, e.g.
``cuda:7`` on a CPU build), ``--trust_remote_code``, ``--grading_workers``/``--grading_timeout``,
``--overwrite``/``--wait`` (see :mod:`sedsft.runs`), ``--system_prompt none`` (or YAML ``null``) for no
system turn, and ``--overflow`` (what a record longer than the token limit gets; its default depends on
the command).
Field metadata ``"manifest": False`` marks options that do not change results (kept out of the run manifest).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import os
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import ModelConfig, TrlParser

from sedsft.cores import cap_workers
from sedsft.errors import UserError, check_choice, check_count, check_number
from sedsft.limits import OVERFLOW, check_overflow
from sedsft.models import DTYPES, check_device

BACKENDS = ("auto", "hf", "vllm")
_OUR_METADATA = ("manifest",)  # field metadata read by sedsft, not passed to argparse
NO_SYSTEM_PROMPT = "none"
SYSTEM_PROMPT_HELP = (
    "system turn added to prompts that have none (default: the paper's); 'none' adds no system turn"
)
# Spellings of earlier versions, and what to write instead.
RENAMED = {"--no_system_prompt": "--system_prompt none", "--no-system-prompt": "--system_prompt none"}


def system_prompt_value(value: str | None) -> str | None:
    """The system prompt, or None for "no system turn" (``none``, YAML ``null`` or an empty string)."""
    if value is None or value.strip() == "" or value.strip().lower() == NO_SYSTEM_PROMPT:
        return None
    return value


def one_line(message: Any) -> str:
    return " ".join(str(message).split())


# ---- the parser ---------------------------------------------------------------------------------------


class CommandParser(TrlParser):
    """TRL's parser with sedsft's error format, strict YAML handling and repeated-option checks."""

    def __init__(
        self, command: str, dataclass_types, *, description: str | None = None, renamed: dict | None = None
    ):
        self.command = command
        self.renamed = {**RENAMED, **(renamed or {})}  # old spelling -> the one to use
        super().__init__(
            dataclass_types, prog=f"sedsft {command}", description=description, allow_abbrev=False
        )
        self.add_argument("--config", metavar="FILE.yaml", help="options from a YAML file; flags win over it")

    @staticmethod
    def _parse_dataclass_field(parser, f):
        if any(k in f.metadata for k in _OUR_METADATA):
            f = copy.copy(f)
            f.metadata = types.MappingProxyType(
                {k: v for k, v in f.metadata.items() if k not in _OUR_METADATA}
            )
        TrlParser._parse_dataclass_field(parser, f)

    def parse_args_and_config(self, args=None, *_, **__) -> tuple:  # TRL's entry point, our rules
        return self.parse(args if args is not None else [])

    def error(self, message):  # argparse's errors: one line, no usage block, no exit
        raise UserError(f"{message}; see sedsft {self.command} --help")

    def parse(self, argv) -> tuple:
        """The dataclasses, built from ``argv`` (and its ``--config``), in the order they were given."""
        argv = self._split_lists(list(argv))
        config_path = _pop_config(argv)
        self._check_spelling(argv)
        if config_path is not None:
            self._apply_yaml(config_path)
        with warnings.catch_warnings():  # TrainingArguments' deprecation notices for flags nobody set
            warnings.simplefilter("ignore", FutureWarning)
            namespace, rest = self.parse_known_args(argv)
            if rest:
                raise self._unknown(rest[0])
            return self._build(namespace)

    # -- command line

    def _split_lists(self, argv: list[str]) -> list[str]:
        """A list of numbers takes values separated by spaces or commas: ``--mask_ratios 0.5,0.7`` or ``0.5 0.7``."""
        out, in_list = [], False
        for token in argv:
            if token.startswith("--"):
                option, eq, value = token.partition("=")
                action = self._option_string_actions.get(option)
                in_list = action is not None and action.nargs in ("+", "*") and action.type in (int, float)
                if in_list and eq:
                    out += [option, *(v for v in value.split(",") if v)]
                    continue
                out.append(token)
            elif in_list:
                out += [v for v in token.split(",") if v]
            else:
                out.append(token)
        return out

    def _check_spelling(self, argv: list[str]) -> None:
        seen: dict[str, str] = {}
        for token in argv:
            if token == "--":
                break
            if not token.startswith("--"):
                continue
            option = token.split("=", 1)[0]
            if option in self.renamed:
                raise UserError(
                    f"{option} is not an option any more: use {self.renamed[option]}; see sedsft {self.command} --help"
                )
            action = self._option_string_actions.get(option)
            if action is None or action.dest in ("help", "config"):
                continue
            if action.dest in seen:
                first = seen[action.dest]
                both = (
                    f"{option} is given twice"
                    if first == option
                    else f"{first} and {option} both set {action.dest}"
                )
                raise UserError(f"{both}; give it once")
            seen[action.dest] = option

    def _unknown(self, token: str) -> UserError:
        if not token.startswith("-"):
            return UserError(
                f"unexpected argument {token!r}; options are --name value, see sedsft {self.command} --help"
            )
        option = token.split("=", 1)[0]
        hint = _closest(option, list(self._option_string_actions))
        hint = f" (did you mean {hint}?)" if hint else ""
        return UserError(f"unknown option {option}{hint}; see sedsft {self.command} --help")

    # -- YAML

    def _yaml_keys(self) -> dict[str, argparse.Action]:
        keys = {}
        for action in self._actions:
            if action.dest in ("help", "config") or isinstance(action, argparse._StoreFalseAction):
                continue
            keys[action.dest] = action
            for option in action.option_strings:
                keys.setdefault(option.lstrip("-"), action)
        return keys

    def _apply_yaml(self, path: str) -> None:
        data, lines = read_yaml(path)
        env = data.pop("env", None)  # TRL's convention: environment variables for the run
        if env is not None:
            if not isinstance(env, dict):
                raise UserError(f"{path}:{lines.get('env', 1)}: env must be a mapping of NAME: value")
            os.environ.update({str(k): str(v) for k, v in env.items()})
        keys, done = self._yaml_keys(), {}
        for key, value in data.items():
            where = f"{path}:{lines.get(key, 1)}"
            action = keys.get(key) if isinstance(key, str) else None
            if action is None:
                hint = _closest(str(key), list(keys))
                hint = f" (did you mean {hint!r}?)" if hint else ""
                raise UserError(f"{where}: unknown option {key!r}{hint}; see sedsft {self.command} --help")
            if action.dest in done:
                raise UserError(
                    f"{where}: {key!r} and {done[action.dest]!r} both set {action.dest}; keep one"
                )
            done[action.dest] = key
            value = _convert(action, value, where)
            for other in self._actions:
                if other.dest == action.dest:
                    other.default, other.required = value, False

    # -- dataclasses

    def _build(self, namespace) -> tuple:
        values = vars(namespace)
        values.pop("config", None)
        outputs = []
        for dtype in self.dataclass_types:
            names = {f.name for f in dataclasses.fields(dtype) if f.init}
            inputs = {k: values[k] for k in names if k in values}
            try:
                outputs.append(dtype(**inputs))
            except UserError:
                raise
            except ValueError as e:  # a config refusing its input in __post_init__ (TRL's included)
                raise UserError(one_line(e)) from e
        return tuple(outputs)


def _closest(name: str, known: list[str]) -> str | None:
    """The known name ``name`` most likely meant: one it abbreviates, else the most similar one."""
    starts = sorted(k for k in known if k.startswith(name) and k != "--help")
    if starts:
        return starts[0]
    close = difflib.get_close_matches(name, known, n=1)
    return close[0] if close else None


def _pop_config(argv: list[str]) -> str | None:
    """Remove ``--config FILE`` / ``--config=FILE`` from ``argv`` and return FILE."""
    found = [i for i, t in enumerate(argv) if t == "--config" or t.startswith("--config=")]
    if not found:
        return None
    if len(found) > 1:
        raise UserError("--config is given twice; give one YAML file")
    i = found[0]
    if argv[i].startswith("--config="):
        return argv.pop(i).split("=", 1)[1]
    if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
        raise UserError("--config needs a file: --config FILE.yaml")
    argv.pop(i)
    return argv.pop(i)


def read_yaml(path: str | os.PathLike) -> tuple[dict, dict[str, int]]:
    """The mapping in a YAML file and the line of each top-level key; any problem names file and line."""
    import yaml

    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise UserError(f"--config {path}: no such file") from None
    except OSError as e:
        raise UserError(f"--config {path}: cannot read it ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UserError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); save the file as UTF-8"
        ) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = f":{min(mark.line + 1, text.count(chr(10)) or 1)}" if mark is not None else ""
        problem = getattr(e, "problem", None) or one_line(e)
        raise UserError(f"{path}{line}: broken YAML ({problem}); fix the file") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise UserError(
            f"{path}: a config file is a mapping of option: value, not a YAML {type(data).__name__}"
        )
    lines: dict[str, int] = {}
    for key_node, _ in node.value:
        key = key_node.value
        if key in lines:
            raise UserError(f"{path}:{key_node.start_mark.line + 1}: {key!r} is set twice; keep one")
        lines[key] = key_node.start_mark.line + 1
    return data, {k: v for k, v in lines.items()}


def _convert(action: argparse.Action, value: Any, where: str) -> Any:
    """A YAML value as the flag's own type would parse it, and in its choices."""
    convert = action.type
    name = action.dest

    def one(v):
        if convert is None or v is None:
            return v
        if isinstance(v, str):
            try:
                return convert(v)
            except (ValueError, TypeError, argparse.ArgumentTypeError):
                kind = getattr(convert, "__name__", "value")
                raise UserError(f"{where}: {name}: {v!r} is not a valid {kind}") from None
        if convert in (int, float) and isinstance(v, bool):
            raise UserError(f"{where}: {name}: expected a number, got {v!r}")
        if convert is float and isinstance(v, int):
            return float(v)
        if convert is int and isinstance(v, float):
            if not v.is_integer():
                raise UserError(f"{where}: {name}: expected an integer, got {v!r}")
            return int(v)
        if convert is str and isinstance(v, (int, float)) and not isinstance(v, bool):
            return str(v)
        return v

    if action.nargs in ("+", "*"):  # a list option: a YAML list, "1,2" for numbers, or one value
        numbers = convert in (int, float) and isinstance(value, str)
        items = value if isinstance(value, list) else value.split(",") if numbers else [value]
        out = [one(v.strip() if isinstance(v, str) else v) for v in items]
    else:
        out = one(value)
    if (
        action.choices is not None
        and not isinstance(out, list)
        and out is not None
        and out not in action.choices
    ):
        raise UserError(f"{where}: {name} must be one of {', '.join(map(str, action.choices))}, got {out!r}")
    return out


def parse_command(command: str, argv, *dataclass_types, description: str | None = None) -> tuple:
    """``CommandParser(command, dataclass_types).parse(argv)``: the filled-in dataclasses, in order."""
    return CommandParser(command, dataclass_types, description=description).parse(argv)


# ---- option groups several commands share ---------------------------------------------------------------


@dataclass
class ModelOptions:
    """Which local model to load and how (calibrate, analyze, eval, filter)."""

    # the folders themselves are run inputs (path and fingerprint), hence not manifest settings
    model: str | None = field(
        default=None,
        metadata={"help": "local checkpoint folder (config.json, weights, tokenizer)", "manifest": False},
    )
    tokenizer: str | None = field(
        default=None,
        metadata={"help": "tokenizer folder, when it is not saved with the model", "manifest": False},
    )
    dtype: str = field(
        default="auto", metadata={"help": "weights' dtype ('auto': as saved)", "choices": list(DTYPES)}
    )
    device: str | None = field(
        default=None,
        metadata={"help": "auto (cuda when available), cpu, cuda, cuda:N; refused if this machine lacks it"},
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "run Python code shipped in the model folder (off unless asked)"}
    )

    def __post_init__(self):
        check_choice("dtype", self.dtype, DTYPES)
        self.device = check_device(self.device)

    def checked(self, *, system_prompt: str | None = None) -> str:
        """``model`` once :func:`sedsft.models.check_model` finds it loadable (weights, code, tokenizer,
        a chat template that renders the command's ``system_prompt``)."""
        from sedsft.models import check_model

        return check_model(
            self.model,
            tokenizer_path=self.tokenizer,
            trust_remote_code=self.trust_remote_code,
            system_prompt=system_prompt,
        )


@dataclass
class TrainModelOptions(ModelConfig):
    """TRL's ModelConfig for sft and grpo (dtype, attention, PEFT, quantization); ``--model`` works too."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "local model folder (config.json, weights, tokenizer); nothing is downloaded",
            "aliases": ["--model"],
            "manifest": False,  # a run input (path and fingerprint)
        },
    )

    def __post_init__(self):
        from sedsft.models import check_attention

        super().__post_init__()
        check_attention(self.attn_implementation)
        # TRL passes one target as a string, which PEFT reads as a regex of the full module path: a plain
        # name (--lora_target_modules q_proj) would then match nothing; as a list it names the layers
        one = self.lora_target_modules
        if isinstance(one, str) and one != "all-linear" and one.replace("_", "").replace(".", "").isalnum():
            self.lora_target_modules = [one]


@dataclass
class BackendOptions:
    """Which generation backend samples (eval, filter)."""

    backend: str = field(
        default="auto",
        metadata={
            "help": "auto: vLLM when installed and a GPU is there, else Transformers (hf)",
            "choices": list(BACKENDS),
        },
    )
    tensor_parallel_size: int = field(default=1, metadata={"help": "GPUs per model with the vllm backend"})

    def __post_init__(self):
        check_choice("backend", self.backend, BACKENDS)
        check_count("tensor_parallel_size", self.tensor_parallel_size)


@dataclass
class GradingOptions:
    """How responses are graded (eval, filter): in worker processes under a hard time limit."""

    grading_workers: int = field(
        default=2,
        metadata={"help": "grading processes (0: in this process, no hard time limit)", "manifest": False},
    )
    grading_timeout: float = field(
        default=2.0, metadata={"help": "seconds per response before it counts as wrong"}
    )
    grading_protocol: str = field(
        default="sedsft",
        metadata={
            "help": "answer extraction: sedsft (default: the answer after </think>, a bare last line, the "
            "whole last expression) or qwen (Qwen2.5-Math's parser where the two differ; docs/evaluation.md)",
            "choices": ["sedsft", "qwen"],
        },
    )

    def __post_init__(self):
        check_count("grading_workers", self.grading_workers, minimum=0)
        self.grading_workers = cap_workers("--grading_workers", self.grading_workers)  # at most the cores
        check_number("grading_timeout", self.grading_timeout, low=0, open_low=True)
        from sedsft.eval.extract import PROTOCOLS  # here: the parser must not import the grader

        check_choice("grading_protocol", self.grading_protocol, PROTOCOLS)


@dataclass
class RunOptions:
    """How a command treats its output folder (see :mod:`sedsft.runs`)."""

    overwrite: bool = field(
        default=False,
        metadata={
            "help": "delete what --output_dir holds (only a sedsft run folder) and start over",
            "manifest": False,
        },
    )
    wait: bool = field(
        default=False,
        metadata={
            "help": "if another sedsft process is using --output_dir, wait for it instead of refusing",
            "manifest": False,
        },
    )


OVERFLOW_HELP = (
    "a record longer than the command's token limit (sft, calibrate: --max_length, or with none the model's "
    "context; analyze: both; prompts and questions: the model's context or the tokenizer's "
    "model_max_length): 'truncate' its end, 'drop' it (counted), or 'error' (refused naming its file and line)"
)


def overflow_field(default: str):
    """The one ``--overflow`` option; commands differ only in its default: truncate for sft, calibrate and
    analyze (:class:`OverflowOptions`), drop for grpo and filter (a question cut short has lost what it
    asks, and verl filters overlong prompts too), error for eval (a benchmark is scored whole)."""
    return field(
        default=default, metadata={"help": f"{OVERFLOW_HELP}; default {default}", "choices": list(OVERFLOW)}
    )


@dataclass
class OverflowOptions:
    """Records longer than the token limit (sft, calibrate, analyze): truncated by default, as TRL does."""

    overflow: str = overflow_field("truncate")

    def __post_init__(self):
        check_overflow(self.overflow)
