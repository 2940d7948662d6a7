"""Errors shared by layers that must not import each other (the store and its run lock; the CLI and the
model fetcher; the data sources and the grader)."""

from __future__ import annotations

from datetime import datetime, timezone


class StoreError(RuntimeError):
    """A store problem a user must act on (corrupt shard, locked run, stale stage); one-line message."""


class FetchError(RuntimeError):
    """A model cannot be fetched or converted (index unreachable, hash mismatch, a foreign folder in the way);
    one-line message, shown by the CLI as a user error (selftrain.model_fetch)."""


class DataError(ValueError):
    """Bad dataset input; the message names the file or source and the column."""


def now() -> str:
    """The current UTC time as the store records it (ISO 8601, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
