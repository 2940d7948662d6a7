"""Turning the faults a user meets (bad bytes in a file, a full disk, a read-only folder) into one-line messages.

The CLI boundary prints these instead of a traceback; library code raises its own one-line errors through
`read_text_utf8`.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

# OSErrors that are about the machine, not a bug: the user frees space or fixes permissions and reruns.
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
RESUME_HINT = "nothing complete was lost; fix that and run the same command again to resume"


def read_text_utf8(path: Path, error: type[Exception]) -> str:
    """The file's text, or `error` naming the file, line and byte where it is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise error(
            f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at line {line}, offset {e.start})"
        ) from None


def environment_error_line(e: BaseException) -> str | None:
    """A one-line message for a disk-full / read-only / permission fault anywhere under `e`, else None."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS:
            where = f" at {e.filename}" if e.filename else ""
            return f"{ENVIRONMENT_ERRNOS[e.errno]}{where} ({e.strerror}); {RESUME_HINT}"
        # safetensors (Rust) reports a failed write as SafetensorError carrying the OS error in its text
        text = str(e)
        if type(e).__name__ == "SafetensorError" and ("os error 28" in text or "No space left" in text):
            return f"disk full while saving weights ({text.splitlines()[0][:200]}); {RESUME_HINT}"
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return None


def maybe_kill(stage: str, unit: str, index: int) -> None:
    """Fault injection for the crash tests: SELFTRAIN_KILL_AT=stage:unit:index SIGKILLs this process right
    after that unit completed (index `*`: the first), exactly as a machine failure would.
    SELFTRAIN_PAUSE_AT (same form) stops this thread there for good instead, its other threads (a lease's
    heartbeat) running on: a worker stuck mid-shard, for a test to kill from outside at a known moment."""
    here = (f"{stage}:{unit}:{index}", f"{stage}:{unit}:*")
    spec = os.environ.get("SELFTRAIN_KILL_AT")
    if spec and spec in here:
        log.warning("SELFTRAIN_KILL_AT=%s: killing this process", spec)
        os.kill(os.getpid(), signal.SIGKILL)
    pause = os.environ.get("SELFTRAIN_PAUSE_AT")
    if pause and pause in here:
        log.warning("SELFTRAIN_PAUSE_AT=%s: pausing here until killed", pause)
        while True:
            time.sleep(60)
