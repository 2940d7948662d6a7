"""Logging set-up for entry points (library modules only create loggers). Rank 0 logs at INFO, others WARN."""

from __future__ import annotations

import logging
import os
import warnings


def is_rank_zero() -> bool:
    return os.environ.get("RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") == "0"


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO if is_rank_zero() else logging.WARNING
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    # third-party chatter that says nothing a user can act on
    for name in ("httpx", "math_verify", "datasets", "urllib3", "DeepSpeed"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*Setting accelerator to CPU.*")
