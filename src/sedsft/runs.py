"""The one rule for output folders: a manifest says which run a folder holds; the same run resumes.

Every command that writes a folder (sft, grpo, eval, filter, export-verl, analyze, sweep, demo) opens
it with :func:`open_run` before it writes anything else:

    spec = RunSpec("filter", settings=settings_of(args, config), inputs={"model": args.model, "data": args.data})
    run = open_run(args.output_dir, spec, overwrite=args.overwrite)
    if run.finished: ...            # this very run completed before: report it, redo nothing
    ...                             # the work, resuming from what the folder already holds
    run.mark_finished()

``sedsft_run.json`` (the manifest, written atomically) records what determines the results:
``command``; ``settings``, the options that change results (a dataclass field whose metadata has
``"manifest": False`` -- progress bars, worker counts, the output path -- is left out); ``inputs``,
each input file or folder by path and fingerprint. The rule:

- a new or empty folder: the manifest is written and the run starts;
- the same command, settings and input fingerprints (paths may differ): the run resumes;
- anything different: refused in one line that names what differs; choose another ``--output_dir``,
  or pass ``--overwrite`` to delete the folder's contents and start over;
- a non-empty folder without a manifest (another program's, or an older sedsft's) is refused, and
  ``--overwrite`` never deletes it.

So a folder only ever holds the files of one run.

Fingerprint of an input, cheap for large weights: a file of at most 64 MiB is the SHA-256 of its
bytes; a larger file is its size and modification time (ns); a folder is the SHA-256 over the sorted
``relative/path <file fingerprint>`` lines of its regular files, hidden names (``.*``) and the run's
own output folder left out; a path that does not exist is ``missing``. Copying a data file keeps its
identity; re-saving a weight file (new modification time) changes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sedsft.errors import UserError
from sedsft.io import atomic_write_json, check_folder_path

MANIFEST = "sedsft_run.json"
FORMAT = "sedsft-run/1"
SMALL_FILE = 64 * 2**20  # bytes; larger files are fingerprinted by size and modification time
_LISTED_FILES = 64  # an input folder with at most this many files keeps its per-file fingerprints

# TrainingArguments fields that say where and how often to write or report, not what is trained.
TRAINING_BOOKKEEPING = frozenset(
    {
        "output_dir", "overwrite", "resume_from_checkpoint", "run_name", "report_to", "project",
        "disable_tqdm", "local_rank", "log_level", "log_level_replica", "log_on_each_node",
        "skip_memory_metrics", "push_to_hub", "save_strategy", "save_steps", "save_total_limit",
        "save_only_model", "save_on_each_node", "enable_jit_checkpoint", "dataloader_num_workers",
        "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor",
        "ddp_timeout", "vllm_group_port", "num_completions_to_print",
    }
)  # fmt: skip
_BOOKKEEPING_PREFIXES = ("logging_", "log_", "hub_", "trackio_", "vllm_server_")


@dataclass(frozen=True)
class RunSpec:
    """What determines a run's results: the command, its settings, and its inputs (name -> path)."""

    command: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, str | os.PathLike | None] = field(default_factory=dict)

    def extended(self, *, settings: Mapping | None = None, inputs: Mapping | None = None) -> RunSpec:
        """This spec with more settings and inputs (a library function adds its own to the caller's)."""
        return RunSpec(self.command, {**self.settings, **(settings or {})}, {**self.inputs, **(inputs or {})})


@dataclass
class Run:
    """An opened run folder. ``resumed``: it already held this run; ``finished``: that run completed."""

    path: Path
    manifest: dict
    resumed: bool
    main_process: bool = True

    @property
    def finished(self) -> bool:
        return bool(self.manifest["state"].get("finished"))

    def mark_finished(self) -> None:
        """Record in the manifest that the run completed (a rerun can then report it and stop)."""
        self.manifest["state"].update(finished=True, finished_utc=_now())
        if self.main_process:
            atomic_write_json(self.path / MANIFEST, self.manifest)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def settings_of(*configs, exclude: frozenset[str] | set[str] = frozenset()) -> dict:
    """The fields of config dataclasses that determine results (metadata ``"manifest": False`` excluded)."""
    out: dict[str, Any] = {}
    for config in configs:
        values = config.to_dict() if hasattr(config, "to_dict") else {}
        for f in dataclasses.fields(config):
            if not f.init or f.name in exclude or f.metadata.get("manifest", True) is False:
                continue
            out[f.name] = values.get(f.name, getattr(config, f.name))
    return _jsonable(out)


def training_settings(*configs) -> dict:
    """:func:`settings_of` for TRL/Transformers training arguments, without their bookkeeping fields."""
    names = {f.name for c in configs for f in dataclasses.fields(c)}
    skip = TRAINING_BOOKKEEPING | {n for n in names if n.startswith(_BOOKKEEPING_PREFIXES)}
    return settings_of(*configs, exclude=skip)


# ---- fingerprints ---------------------------------------------------------------------------------


def digest(obj: Any) -> str:
    """SHA-256 of ``obj`` as canonical JSON: the identity of in-memory inputs (a prompt list, a problem set)."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_fingerprint(path: Path) -> str:
    st = path.stat()
    if st.st_size > SMALL_FILE:
        return f"size={st.st_size},mtime_ns={st.st_mtime_ns}"
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def fingerprint(path: str | os.PathLike, *, exclude: Path | None = None) -> dict:
    """``{"path", "fingerprint"}`` of a file or folder (module doc), plus ``files`` for small folders."""
    p = Path(path).expanduser()
    entry: dict[str, Any] = {"path": str(p.resolve())}
    if p.is_file():
        entry["fingerprint"] = file_fingerprint(p)
        return entry
    if not p.is_dir():
        entry["fingerprint"] = "missing"
        return entry
    skip = exclude.resolve() if exclude is not None else None
    files: dict[str, str] = {}
    for root, dirs, names in os.walk(p):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() != skip)
        for name in sorted(n for n in names if not n.startswith(".")):
            f = here / name
            if f.is_file():
                files[f.relative_to(p).as_posix()] = file_fingerprint(f)
    lines = "".join(f"{k} {v}\n" for k, v in sorted(files.items()))
    entry["fingerprint"] = "sha256:" + hashlib.sha256(lines.encode("utf-8")).hexdigest()
    if len(files) <= _LISTED_FILES:
        entry["files"] = files
    return entry


# ---- the rule ---------------------------------------------------------------------------------------


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _differences(old: dict, new: dict) -> list[str]:
    if old.get("command") != new["command"]:
        return [f"it was made by `sedsft {old.get('command')}`, not `sedsft {new['command']}`"]
    out = []
    a, b = old.get("settings", {}), new["settings"]
    for key in sorted(set(a) | set(b)):
        if a.get(key, "(unset)") != b.get(key, "(unset)"):
            out.append(f"{key} {_short(a.get(key, '(unset)'))} -> {_short(b.get(key, '(unset)'))}")
    a, b = old.get("inputs", {}), new["inputs"]
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key) or {}, b.get(key) or {}
        if x.get("fingerprint") == y.get("fingerprint"):
            continue
        if x.get("path") != y.get("path"):
            out.append(f"{key} {x.get('path', '(none)')} -> {y.get('path', '(none)')}")
        else:
            fx, fy = x.get("files") or {}, y.get("files") or {}
            changed = sorted(k for k in set(fx) | set(fy) if fx.get(k) != fy.get(k))
            out.append(f"{key} {y.get('path')} changed" + (f" ({', '.join(changed[:3])})" if changed else ""))
    return out


def _visible_entries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if not p.name.startswith(".")]


def _clear(folder: Path) -> None:
    for p in folder.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def build_manifest(output_dir: str | os.PathLike, spec: RunSpec) -> dict:
    """The manifest ``spec`` gives for ``output_dir`` (inputs fingerprinted, settings as JSON)."""
    out = Path(output_dir)
    inputs = {k: fingerprint(v, exclude=out) for k, v in spec.inputs.items() if v is not None}
    return {
        "format": FORMAT,
        "command": spec.command,
        "settings": _jsonable(dict(spec.settings)),
        "inputs": inputs,
        "state": {},
    }


def check_run(output_dir: str | os.PathLike, spec: RunSpec, *, overwrite: bool = False) -> None:
    """Raise the UserError :func:`open_run` would raise, writing nothing (every process of a job can ask)."""
    out = Path(output_dir).expanduser()
    _judge(out, build_manifest(out, spec), overwrite)


def _judge(out: Path, new: dict, overwrite: bool) -> dict | None:
    """The manifest already in ``out`` (None: none there) if the rule lets ``new`` open it; else a UserError."""
    check_folder_path(out, flag="--output_dir")  # a file there, or on its way
    path = out / MANIFEST
    if not path.is_file():
        if out.is_dir() and _visible_entries(out):
            names = ", ".join(sorted(p.name for p in _visible_entries(out))[:3])
            raise UserError(
                f"{out} is not empty ({names}, ...) and holds no sedsft run ({MANIFEST}): it was made by another "
                "program or an older sedsft; choose another --output_dir or empty it yourself"
            )
        return None
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        old = None
    if not isinstance(old, dict) or old.get("format") != FORMAT:
        raise UserError(f"{path} is not a sedsft run manifest; remove it or choose another --output_dir")
    diffs = _differences(old, new)
    if diffs and not overwrite:
        raise UserError(
            f"{out} holds another run ({'; '.join(diffs[:4])}{'; ...' if len(diffs) > 4 else ''}); "
            "rerun with the same options, choose another --output_dir, or pass --overwrite to replace it"
        )
    return old


def open_run(
    output_dir: str | os.PathLike,
    spec: RunSpec,
    *,
    overwrite: bool = False,
    main_process: bool = True,
) -> Run:
    """Open ``output_dir`` for the run ``spec`` under the rule of the module doc.

    ``main_process=False`` (other ranks of a distributed job, after the main one): only check that
    the folder holds this run; nothing is written or deleted.
    """
    out = Path(output_dir).expanduser()
    new = build_manifest(out, spec)
    if not main_process:
        old = _judge(out, new, False) if (out / MANIFEST).is_file() else None
        if old is None:
            raise UserError(f"{out} holds no run manifest on this process's side; rerun the command")
        return Run(out, old, resumed=True, main_process=False)
    old = _judge(out, new, overwrite)
    if old is not None:
        if not overwrite:
            return Run(out, old, resumed=True)
        _clear(out)  # a sedsft run folder, replaced on request: nothing of the old run stays
    from sedsft import __version__

    new["state"] = {"sedsft_version": __version__, "created_utc": _now(), "finished": False}
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / MANIFEST, new)
    except PermissionError as e:
        raise UserError(
            f"cannot write to output folder {out} ({e.strerror}); choose another --output_dir"
        ) from None
    return Run(out, new, resumed=False)


# ---- Trainer folders (sft, grpo) ---------------------------------------------------------------------


def open_training_run(args, spec: RunSpec, *, overwrite: bool = False) -> Run:
    """:func:`open_run` for a Trainer's ``args.output_dir`` under a distributed launch.

    Every process judges the folder first (the same files, the same verdict: a refusal stops them all
    alike, none waits at a barrier); then the main process writes, and the others read it back.
    """
    check_run(args.output_dir, spec, overwrite=overwrite)
    with args.main_process_first(local=False, desc="sedsft run folder"):
        main = args.process_index == 0
        return open_run(args.output_dir, spec, overwrite=overwrite and main, main_process=main)


def check_checkpoint(path: str | os.PathLike, *, flag: str = "--resume_from_checkpoint") -> str:
    """``path`` if it is a complete Trainer checkpoint (one with ``trainer_state.json``, written last)."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{flag} {path} is not a folder; pass a checkpoint-N folder (or true for the last)")
    if not (p / "trainer_state.json").is_file():
        last = last_checkpoint(p)  # the run folder itself was given
        hint = f"pass one of its checkpoints, e.g. {last}" if last else "pass a complete checkpoint-N folder"
        raise UserError(f"{flag} {path} is not a complete checkpoint (no trainer_state.json); {hint}")
    return str(p)


def last_checkpoint(folder: str | os.PathLike) -> str | None:
    """The newest complete ``checkpoint-N`` in ``folder`` (Trainer writes ``trainer_state.json`` last)."""
    best, best_step = None, -1
    p = Path(folder)
    if not p.is_dir():
        return None
    for d in p.iterdir():
        step = d.name.removeprefix("checkpoint-")
        if d.is_dir() and step.isdigit() and (d / "trainer_state.json").is_file() and int(step) > best_step:
            best, best_step = str(d), int(step)
    return best
