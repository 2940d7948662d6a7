"""Errors shared by layers that must not import each other (the store and its run lock)."""

from __future__ import annotations

from datetime import datetime, timezone


class StoreError(RuntimeError):
    """A store problem a user must act on (corrupt shard, locked run, stale stage); one-line message."""


def now() -> str:
    """The current UTC time as the store records it (ISO 8601, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
