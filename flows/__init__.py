"""Prefect flows over the selftrain library: one iteration as a DAG, and N iterations."""

from __future__ import annotations

import logging
import os
from pathlib import Path


def configure_prefect(store_root: str = "artifacts") -> None:
    """Defaults that let a run start with no prior Prefect set-up. Anything the user exported wins, including
    PREFECT_API_URL (then runs go to that server instead of a temporary local one)."""
    home = Path(store_root).resolve() / ".prefect"
    defaults = {
        "PREFECT_HOME": str(home),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        # selftrain's own loggers (stage progress, relayed subprocess output) go into the Prefect run logs
        "PREFECT_LOGGING_EXTRA_LOGGERS": "selftrain",
        # ...and outside a run (model bootstrap, stale checks) they just go to the console
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    _selftrain_logs_at_info()


def _selftrain_logs_at_info() -> None:
    # Stage progress and relayed subprocess output are INFO records, and the inherited root level is WARNING
    # when Prefect set up logging first: they would be dropped before reaching any handler.
    logger = logging.getLogger("selftrain")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


def route_selftrain_logs() -> None:
    """Send the `selftrain` loggers' records (stage progress, the relayed output of stage subprocesses) to the
    Prefect run they happen in. Called at the start of each flow (Prefect's logging is set up by then), so a
    run started from a deployment by a worker or `serve` gets them too, whatever its environment says."""
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.logging.handlers import APILogHandler

    class RunLogHandler(APILogHandler):
        """Prefect's API handler, quiet outside a run: the library also logs outside flows in this process
        (the stock handler warns on every such record unless PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW=ignore)."""

        def emit(self, record: logging.LogRecord) -> None:
            if getattr(record, "flow_run_id", None) or FlowRunContext.get() or TaskRunContext.get():
                super().emit(record)

    _selftrain_logs_at_info()
    logger = logging.getLogger("selftrain")
    # PREFECT_LOGGING_EXTRA_LOGGERS=selftrain has Prefect attach one already; never two (duplicate lines)
    if not any(isinstance(h, APILogHandler) for h in logger.handlers):
        logger.addHandler(RunLogHandler())
