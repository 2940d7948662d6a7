"""sha256 of large files (model weights), remembered across processes.

Hashing an 8B model's shards takes about a minute; keys that include the weights' content (the reference
log-prob cache) would pay that in every train stage. A digest is kept under (resolved path, size, mtime_ns,
inode) in one small file per entry, so a later process reads it back, and a file rewritten in place (new
mtime or size) is hashed again. The entries are written atomically (temp + rename), so concurrent ranks of an
`accelerate launch` at worst hash the same file twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from selftrain.fileio import atomic_write_text, sha256_file

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """$SELFTRAIN_HASH_CACHE, else $XDG_CACHE_HOME/selftrain/sha256, else ~/.cache/selftrain/sha256."""
    explicit = os.environ.get("SELFTRAIN_HASH_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "selftrain" / "sha256"


def _stamp(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def cached_sha256(path: Path) -> str:
    """The file's sha256 (streamed), read from the cache when the file's stamp has not changed."""
    path = Path(path)
    stamp = _stamp(path)
    entry = cache_dir() / (hashlib.sha256(stamp["path"].encode()).hexdigest()[:32] + ".json")
    try:
        known = json.loads(entry.read_text())
        if {k: known.get(k) for k in stamp} == stamp:
            return known["sha256"]
    except (OSError, ValueError, KeyError, AttributeError):
        pass  # no entry yet, or an unreadable one: hash the file
    digest = sha256_file(path)
    if _stamp(path) != stamp:  # rewritten while being read: the digest belongs to no stable content
        return digest
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(entry, json.dumps({**stamp, "sha256": digest}))
    except OSError as exc:  # a read-only home: still correct, only slower next time
        log.debug("cannot keep the sha256 of %s in %s: %s", path, entry.parent, exc)
    return digest
