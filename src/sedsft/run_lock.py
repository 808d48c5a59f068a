"""One process per run folder: an advisory lock on ``<folder>/.sedsft_run.lock``, held for the whole run.

:mod:`sedsft.runs` (the run-folder rule) takes it in ``open_run``; this module is the mechanism:

    key = lock(folder, wait=False)  # another process holds it: a UserError naming the holder's pid
    ...                             # the run
    unlock(key)                     # or release_all() when a command ends; the kernel when a process dies

- ``fcntl.flock`` on the lock file: the kernel drops it when its holder dies, so the lock of a killed
  run is simply taken over; the file itself, left behind by a kill, is ignored by the rule.
- Re-entrant within a process: a command that opens its folder and then calls a library function that
  opens it again shares one lock (a count of users).
- The file records the holder's pid, host, command line, start time and distributed job, so a refusal
  can say who holds the folder, and the other ranks of a job can tell their own main from another run.
- Let go cleanly: the holder removes the file before it closes it; a process that waited on the removed
  file notices (its inode is no longer the path's) and locks the new one.
- A forked child closes its copies of the parent's lock files, so a lingering worker never keeps a
  killed parent's folder locked.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sedsft.errors import UserError

LOCK = ".sedsft_run.lock"


@dataclass
class _Held:
    fd: int  # the open lock file; closing it lets go of the lock
    users: int  # opened runs of this process that use the folder


_HELD: dict[Path, _Held] = {}  # folder (resolved) -> the lock this process holds there


def _forget_inherited_locks() -> None:
    """In a forked child: close the parent's lock files (the parent keeps its locks; a child with a copy
    would keep the folder locked after its parent was killed)."""
    for held in _HELD.values():
        with contextlib.suppress(OSError):
            os.close(held.fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_inherited_locks)


def _job() -> str | None:
    """The distributed job of this process (its rendezvous address); None for a process on its own."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    return f"{os.environ.get('MASTER_ADDR', '')}:{os.environ.get('MASTER_PORT', '')}"


def _info(fd: int) -> dict:
    """What the lock file says about its holder ({} when it says nothing readable)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
    except (ValueError, OSError):
        return {}
    return info if isinstance(info, dict) else {}


def _holder(fd: int) -> str:
    """Who holds the lock, in words: ``another process (pid 123, `sedsft eval ...`, since ...)``."""
    info = _info(fd)
    if not info.get("pid"):
        return "another process"
    where = f" on {info['host']}" if info.get("host") not in (None, platform.node()) else ""
    command = str(info.get("command") or "")
    command = f", `{command if len(command) <= 60 else command[:57] + '...'}`" if command else ""
    since = f", since {info['since_utc']}" if info.get("since_utc") else ""
    return f"another process (pid {info['pid']}{where}{command}{since})"


def _in_use(folder: Path, fd: int) -> UserError:
    return UserError(
        f"{folder} is in use by {_holder(fd)}; let it finish, pass --wait to wait for it, or choose another "
        "--output_dir"
    )


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def lock(folder: Path, *, wait: bool = False) -> Path:
    """Lock the existing ``folder`` for this process; the key :func:`unlock` takes.

    Held by another process: a UserError naming it, or with ``wait`` a one-line notice and a wait.
    """
    key = folder.resolve()
    held = _HELD.get(key)
    if held is not None:  # this process runs here already (a command, then the library function it calls)
        held.users += 1
        return key
    path = key / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    raise _in_use(folder, fd) from None
                print(
                    f"sedsft: {folder} is in use by {_holder(fd)}; waiting for it (--wait)", file=sys.stderr
                )
                sys.stderr.flush()
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as e:  # a file system without locks (some network mounts)
                raise UserError(
                    f"cannot lock {path} ({e.strerror}); choose an --output_dir on a local disk"
                ) from None
            if _same_file(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the file was removed (its holder let go) while we waited: lock the one there now
    info = {
        "pid": os.getpid(),
        "host": platform.node(),
        "command": shlex.join([Path(sys.argv[0] or "python").name, *sys.argv[1:]])[:300],
        "since_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "job": _job(),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
    _HELD[key] = _Held(fd, 1)
    return key


def unlock(key: Path, *, every_user: bool = False) -> None:
    """One user less of the lock :func:`lock` returned; the last one lets go of it (and removes the file)."""
    held = _HELD.get(key)
    if held is None:
        return
    held.users = 0 if every_user else held.users - 1
    if held.users > 0:
        return
    del _HELD[key]
    if _same_file(held.fd, key / LOCK):  # still ours: removed while held, so no lock file is left behind
        with contextlib.suppress(OSError):
            os.unlink(key / LOCK)
    os.close(held.fd)


def release_all() -> None:
    """Let go of every run folder this process holds (the end of a command; also run at exit)."""
    for key in list(_HELD):
        unlock(key, every_user=True)


atexit.register(release_all)


def check_held_by_this_job(folder: str | os.PathLike) -> None:
    """On a rank other than the main one: a UserError unless the folder's lock is held by this job."""
    out = Path(folder).expanduser()
    try:
        fd = os.open(out / LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        raise UserError(f"{out} was not opened by this job's main process; see its error") from None
    try:
        if _job() is not None and _info(fd).get("job") == _job():
            return
        raise _in_use(out, fd)
    finally:
        os.close(fd)
