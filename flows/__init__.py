"""Prefect flows over the selftrain library: one iteration as a DAG, and N iterations."""

from __future__ import annotations

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
