"""The run folder's lock: one writer per run folder, and a lock that cannot wedge it.

The lock file is never seen half-written: its content goes to a temp file first, which is then hard-linked to
`.lock` (a link fails if `.lock` exists, like O_EXCL, but the name appears with its content). A lock left by a
dead process on this host is taken over; so is an empty or unreadable one (written by an older version that
died between create and write, or truncated by a full disk) once it is older than a short grace period.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from selftrain.errors import StoreError, now
from selftrain.procs import kill_group

log = logging.getLogger(__name__)

LOCK = ".lock"
# An unreadable lock younger than this may be one an older selftrain is still writing: wait, then take over.
UNREADABLE_GRACE_S = 5.0


def read_owner(path: Path) -> dict[str, Any] | None:
    """The lock's owner record, or None when the file is empty or not a JSON object (unreadable)."""
    try:
        owner = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError):
        return None
    return owner if isinstance(owner, dict) and "pid" in owner else None


def host_id() -> str:
    """This machine's name in lock and lease records: SELFTRAIN_HOST where set (containers that share a host
    name, or the tests' stand-in machines), else the host name."""
    return os.environ.get("SELFTRAIN_HOST") or socket.gethostname()


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (killed, not yet reaped) is dead for our purposes
    with contextlib.suppress(OSError):
        if "State:\tZ" in Path(f"/proc/{pid}/status").read_text():
            return False
    return True


def _write_temp(path: Path, text: str) -> Path:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # the content is on disk before the name appears
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot write the lock file {path}: {e.strerror or e}") from None
    return tmp


def link_new(tmp: Path, path: Path) -> bool:
    """Give the finished file `tmp` the name `path` unless `path` exists; removes tmp. Atomic: link(2) creates
    the name or fails with EEXIST in one operation, also on NFS (one LINK call, the classic NFS lock-file
    recipe) and Lustre (the MDS serializes namespace operations), and the name appears with its content."""
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        # a filesystem without hard links: exclusive create (atomic on NFSv3+ and Lustre), then the content
        # (not atomic: a reader may see it empty for a moment; an empty lock left by a crash is taken over)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as out, open(tmp, "rb") as src:
            out.write(src.read())
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _create(path: Path, text: str) -> bool:
    """Create `path` holding `text` atomically; False if it already exists."""
    tmp = _write_temp(path, text)
    try:
        return link_new(tmp, path)
    except OSError as e:
        raise StoreError(f"cannot create the lock file {path}: {e.strerror or e}") from None


def _take_over(path: Path, inode: int) -> None:
    """Remove the abandoned lock `path` if it is still the file we judged (same inode): another process may
    have taken it over and written a fresh lock meanwhile, which must survive."""
    aside = path.with_name(f"{path.name}.takeover-{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # someone else removed it first
    if os.stat(aside).st_ino != inode:
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)  # not ours to remove: put it back
    aside.unlink(missing_ok=True)


@contextlib.contextmanager
def hold(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock for the duration of the block (re-entrant within one process)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    if os.environ.get("SELFTRAIN_LOCK_OWNER") == str(os.getpid()) and path.exists():
        yield  # re-entrant: a flow inside `selftrain run` already holds it
        return
    me = {"pid": os.getpid(), "host": host_id(), "since": now()}
    deadline = time.monotonic() + UNREADABLE_GRACE_S + 5
    while not _create(path, json.dumps(me)):
        try:
            inode, age = os.stat(path).st_ino, time.time() - os.stat(path).st_mtime
            owner = read_owner(path)
        except FileNotFoundError:
            continue  # released meanwhile: try again
        if owner is None:
            if age < UNREADABLE_GRACE_S and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            log.warning("taking over an empty or unreadable lock file %s", path)
            _take_over(path, inode)
            continue
        if owner.get("host") == me["host"] and not pid_alive(int(owner.get("pid") or -1)):
            log.warning("taking over a lock left by dead process %s", owner.get("pid"))

            kill_group(owner.get("child_pgid"))  # e.g. a vLLM engine its stage left behind
            _take_over(path, inode)
            continue
        raise StoreError(
            f"run folder {run_dir} is in use by pid {owner.get('pid')} on {owner.get('host')} "
            f"since {owner.get('since')} (lock file {path})"
        )
    os.environ["SELFTRAIN_LOCK_OWNER"] = str(os.getpid())
    try:
        yield
    finally:
        os.environ.pop("SELFTRAIN_LOCK_OWNER", None)
        with contextlib.suppress(OSError):
            owner = read_owner(path)
            if owner is not None and owner.get("pid") == os.getpid():
                path.unlink()


def record_child(run_dir: Path, pgid: int | None) -> None:
    """Note (in the lock file) the process group of a stage subprocess this run is waiting for."""
    path = run_dir / LOCK
    # bookkeeping only: a full disk (StoreError from _write_temp) must not fail the stage
    with contextlib.suppress(OSError, RuntimeError):
        owner = read_owner(path)
        if owner is None or owner.get("pid") != os.getpid():
            return
        owner["child_pgid"] = pgid
        tmp = _write_temp(path, json.dumps(owner))
        os.replace(tmp, path)
