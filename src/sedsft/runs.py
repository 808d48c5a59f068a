"""The one rule for output folders: a manifest says which run a folder holds; the same run resumes.

Every command that writes a folder (sft, grpo, eval, filter, export-verl, analyze, sweep, demo) opens
it with :func:`open_run` before it writes anything else:

    spec = RunSpec("filter", settings=settings_of(args, config), inputs={"model": args.model, "data": args.data})
    run = open_run(args.output_dir, spec, overwrite=args.overwrite, wait=args.wait)
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
- a folder with any entry (hidden ones such as ``.git`` or ``.env`` included) but no manifest -- another
  program's, or an older sedsft's -- is refused, and ``--overwrite`` never deletes it;
- a manifest that is not one (not JSON, not an object, a key missing or of the wrong type, e.g. after
  an edit by hand) is refused as a whole, naming the file and what is wrong; nothing there is deleted.

So a folder only ever holds the files of one run.

One process at a time (:mod:`sedsft.run_lock`): a run holds a lock on its folder from :func:`open_run`
until the command ends, the process exits, or every :class:`Run` it opened there is closed. Another
process opening the folder is refused in one line naming the holder's pid, or with ``wait=True``
(``--wait``) waits for it and then judges the folder afresh; a killed run's lock is taken over. The
order: the folder is judged before anything is written to it (a foreign folder never gets a lock
file), then locked, then judged again under the lock. The lock file ``.sedsft_run.lock`` and a torn
temporary file of the manifest are sedsft's own: they never make a folder look foreign, and
``--overwrite`` keeps the lock. Only the main process of a distributed job locks; the other ranks
check that their own job holds it.

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
from sedsft.run_lock import LOCK, check_held_by_this_job, lock, unlock

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
    _lock: Path | None = field(default=None, repr=False)  # the folder this Run keeps locked

    @property
    def finished(self) -> bool:
        return bool(self.manifest["state"].get("finished"))

    def close(self) -> None:
        """Let go of the folder's lock (once every Run this process opened there is closed)."""
        if self._lock is not None:
            unlock(self._lock)
            self._lock = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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


def _is_own(name: str) -> bool:
    """sedsft's bookkeeping, which never makes a folder look used: its lock, a torn write of its manifest."""
    return name == LOCK or (name.startswith(f".{MANIFEST}.") and name.endswith(".tmp"))


def _contents(folder: Path) -> list[Path]:
    """Every entry of ``folder``, hidden ones included, but sedsft's own bookkeeping files."""
    return [p for p in folder.iterdir() if not _is_own(p.name)]


def _clear(folder: Path) -> None:
    for p in folder.iterdir():
        if p.name == LOCK:  # this process holds it
            continue
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


_JSON_KINDS = {dict: "an object", list: "an array", str: "a string", bool: "true/false", type(None): "null"}


def _kind(value: Any) -> str:
    """What JSON value ``value`` is, with its article: ``an array``, ``a number``, ``null``."""
    return _JSON_KINDS.get(type(value), "a number")


def _manifest_problem(old: Any) -> str | None:
    """What is wrong with a manifest read from disk, checked as a whole (None: nothing)."""
    if not isinstance(old, dict):
        return f"it holds {_kind(old)}, not an object"
    if old.get("format") != FORMAT:
        return f"'format' is {_short(old.get('format'))}, not {json.dumps(FORMAT)}"
    for key, kind in (("command", str), ("settings", dict), ("inputs", dict), ("state", dict)):
        if key not in old:
            return f"{key!r} is missing"
        if not isinstance(old[key], kind):
            return f"{key!r} must be {_JSON_KINDS[kind]}, not {_kind(old[key])}"
    for name, entry in old["inputs"].items():
        if not (
            isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in ("path", "fingerprint"))
        ):
            return f"input {name!r} must be an object with 'path' and 'fingerprint' strings"
        files = entry.get("files", {})
        if not (isinstance(files, dict) and all(isinstance(v, str) for v in files.values())):
            return f"input {name!r}: 'files' must map file names to fingerprint strings"
    state = old["state"]
    if not isinstance(state.get("finished"), bool):
        return f"'state.finished' must be true or false, not {_short(state.get('finished', '(missing)'))}"
    for key in ("sedsft_version", "created_utc", "finished_utc"):
        if key in state and not isinstance(state[key], str):
            return f"'state.{key}' must be a string, not {_kind(state[key])}"
    return None


def read_manifest(out: Path) -> dict | None:
    """The manifest in ``out`` (None: there is none), validated as a whole; a broken one is a UserError."""
    path = out / MANIFEST
    if not path.is_file():
        return None
    problem = None
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        problem = "not UTF-8 text"
    except json.JSONDecodeError as e:
        problem = f"not JSON: {e.msg} at line {e.lineno}"
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror}); choose another --output_dir") from None
    else:
        problem = _manifest_problem(old)
    if problem is not None:
        raise UserError(
            f"{path} is not a valid sedsft run manifest ({problem}); restore the file, or choose another "
            f"--output_dir: sedsft uses and deletes nothing in {out} while it is broken, --overwrite included"
        )
    return old


def _judge(out: Path, new: dict, overwrite: bool) -> dict | None:
    """The manifest already in ``out`` (None: none there) if the rule lets ``new`` open it; else a UserError."""
    check_folder_path(out, flag="--output_dir")  # a file there, or on its way
    old = read_manifest(out)
    if old is None:
        try:
            entries = _contents(out) if out.is_dir() else []
        except OSError as e:
            raise UserError(
                f"cannot read output folder {out} ({e.strerror}); choose another --output_dir"
            ) from None
        if entries:
            names = ", ".join(sorted(p.name for p in entries)[:3])
            raise UserError(
                f"{out} is not empty ({names}, ...) and holds no sedsft run "
                f"({MANIFEST}): it was made by another program or an older sedsft; choose another "
                "--output_dir or empty it yourself (sedsft never deletes it, --overwrite included)"
            )
        return None
    diffs = _differences(old, new)
    if diffs and not overwrite:
        raise UserError(
            f"{out} holds another run ({'; '.join(diffs[:4])}{'; ...' if len(diffs) > 4 else ''}); "
            "rerun with the same options, choose another --output_dir, or pass --overwrite to replace it"
        )
    return old


def _cannot_write(out: Path, e: OSError) -> UserError:
    if isinstance(e, (FileExistsError, NotADirectoryError)):
        parent = next((p for p in out.parents if p.exists() and not p.is_dir()), out.parent)
        return UserError(f"cannot make output folder {out}: {parent} is a file; choose another --output_dir")
    return UserError(f"cannot write to output folder {out} ({e.strerror}); choose another --output_dir")


def open_run(
    output_dir: str | os.PathLike,
    spec: RunSpec,
    *,
    overwrite: bool = False,
    wait: bool = False,
    main_process: bool = True,
) -> Run:
    """Open ``output_dir`` for the run ``spec`` under the rule of the module doc, locked for this process.

    ``wait``: if another process holds the folder, wait for it instead of refusing. ``main_process=False``
    (other ranks of a distributed job, after the main one): only check that the folder holds this
    run; nothing is written, locked or deleted.
    """
    out = Path(output_dir).expanduser()
    new = build_manifest(out, spec)
    if not main_process:
        old = _judge(out, new, False) if (out / MANIFEST).is_file() else None
        if old is None:
            raise UserError(f"{out} holds no run manifest on this process's side; rerun the command")
        return Run(out, old, resumed=True, main_process=False)
    _judge(out, new, overwrite)  # before anything is written there, the lock file included
    try:
        out.mkdir(parents=True, exist_ok=True)
        key = lock(out, wait=wait)
    except OSError as e:
        raise _cannot_write(out, e) from None
    try:
        old = _judge(out, new, overwrite)  # again, under the lock: another run may have changed the folder
        if old is not None and not overwrite:
            return Run(out, old, resumed=True, _lock=key)
        if old is not None:
            _clear(out)  # a sedsft run folder, replaced on request: nothing of the old run stays
        from sedsft import __version__

        new["state"] = {"sedsft_version": __version__, "created_utc": _now(), "finished": False}
        atomic_write_json(out / MANIFEST, new)
    except OSError as e:
        unlock(key)
        raise _cannot_write(out, e) from None
    except BaseException:
        unlock(key)
        raise
    return Run(out, new, resumed=False, _lock=key)


# ---- Trainer folders (sft, grpo) ---------------------------------------------------------------------


def open_training_run(args, spec: RunSpec, *, overwrite: bool = False, wait: bool = False) -> Run:
    """:func:`open_run` for a Trainer's ``args.output_dir`` under a distributed launch.

    Every process judges the folder first (the same files, the same verdict: a refusal stops them all
    alike, none waits at a barrier); then the main process locks and writes, and the others read it
    back once they see the lock held by their own job (not by another run that refused the main one).
    """
    check_run(args.output_dir, spec, overwrite=overwrite)
    main = args.process_index == 0
    with args.main_process_first(local=False, desc="sedsft run folder"):
        if main:
            return open_run(args.output_dir, spec, overwrite=overwrite, wait=wait)
        check_held_by_this_job(args.output_dir)
        return open_run(args.output_dir, spec, main_process=False)


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
