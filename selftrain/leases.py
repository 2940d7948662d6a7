"""Shard leases: any number of worker processes, on any machines that share the store, work one stage.

In a stage folder, `.leases/` (dot-prefixed: Parquet readers of the folder skip it) holds
  part-00007.<g>           claim number g of shard 7; the highest g is the current holder (host, pid inside)
  part-00007.done          who published shard 7, with its sha256, rows and size
  manifest.<g>             the claim to write the stage's manifest (one writer)
  total                    how many shards the stage has (for `selftrain status`)
  clock-<host>-<pid>       touched by each worker to read the shared filesystem's clock

`.leases/` lives only while the stage is being worked: the worker that writes the manifest removes it right
after (`clear`), and so does every worker that finds the manifest written (one killed in between leaves it to
the next run's resume, `pipeline.execute_stage`), so a complete folder holds its outputs and manifest only.
The manifest's claim is what makes one worker its writer, so it cannot go before the manifest is in place.

Why a claim is atomic on a shared filesystem: it is `link(tmp, name)`, which creates the name or fails with
EEXIST in one server operation: on a local filesystem, on NFS (LINK is a single RPC and the classic NFS lock-file
recipe; `O_CREAT|O_EXCL` is only atomic from NFSv3 on, link from NFSv2) and on Lustre (the MDS serializes
namespace operations). The content is written to the temp file first, so a lease is never seen empty.
A takeover never removes or renames another worker's lease: it creates generation g+1, which link makes
exclusive too, so of several workers that found generation g expired exactly one gets the shard.

Expiry: each holder's heartbeat thread touches its leases every ttl/4. A lease whose mtime is older than ttl,
measured against a file this worker touches on the same filesystem (no clock agreement between hosts needed),
is expired; a lease of this host whose pid is dead is expired at once (a resumed run need not wait for its own
killed attempt).

Publishing: just before it publishes a shard a holder checks that no later generation exists and that its
heartbeat renewed within ttl/2, then publishes with link(tmp, shard), which fails if the shard exists: whatever
the timing (a worker paused between its check and its link), a shard is published once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from selftrain.runlock import host_id, link_new, pid_alive

log = logging.getLogger(__name__)

LEASES = ".leases"


class LeaseLost(Exception):
    """This worker no longer holds the shard's lease: another worker took it over."""


@dataclass
class Claim:
    index: int
    host: str
    pid: int
    age_s: float
    live: bool


class Leases:
    """This worker's claims on one stage folder's shards, renewed by a heartbeat thread while held."""

    def __init__(self, stage_dir: Path, total: int, ttl_s: float = 60.0):
        self.dir = stage_dir / LEASES
        self.dir.mkdir(parents=True, exist_ok=True)
        self.total, self.ttl = total, ttl_s
        self.host, self.pid = host_id(), os.getpid()
        self.held: dict[str, tuple[int, float]] = {}  # key -> (generation, monotonic time of last renewal)
        self.lost: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        total_file = self.dir / "total"
        if not total_file.exists():
            self._write_new(total_file, str(total))

    # --- names and records
    @staticmethod
    def key(index: int) -> str:
        return f"part-{index:05d}"

    def _write_new(self, path: Path, text: str) -> bool:
        tmp = self.dir / f".{path.name}.tmp-{self.host}-{self.pid}"
        tmp.write_text(text)
        return link_new(tmp, path)

    def _top(self, key: str) -> int:
        """The highest generation of `key`'s claims (0: never claimed). Probes upwards: takeovers are rare,
        so a few stats, and no directory listing that grows with the number of shards."""
        g = 0
        while (self.dir / f"{key}.{g + 1}").exists():
            g += 1
        return g

    def clock(self) -> float:
        """Now, by the shared filesystem's clock: the mtime of a file this worker has just touched."""
        path = self.dir / f"clock-{self.host}-{self.pid}"
        path.touch()
        return path.stat().st_mtime

    def _live(self, path: Path, now: float) -> bool:
        try:
            record = json.loads(path.read_text())
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return False  # released
        except ValueError:
            return True  # cannot happen (content before name); if it does, wait for it to expire by age
        if record.get("host") == self.host and not pid_alive(int(record.get("pid", -1))):
            return False
        return now - mtime < self.ttl

    # --- claiming
    def try_claim(self, key: str, now: float | None = None) -> bool:
        """Claim `key` (a shard's key, or "manifest") if nobody holds a live claim on it."""
        g = self._top(key)
        if g and self._live(self.dir / f"{key}.{g}", self.clock() if now is None else now):
            return False
        record = json.dumps({"host": self.host, "pid": self.pid, "at": time.time()})
        if not self._write_new(self.dir / f"{key}.{g + 1}", record):
            return False  # another worker took generation g+1 first
        if g:
            log.warning("took over %s from an expired lease (generation %d)", key, g)
        with self._lock:
            self.held[key] = (g + 1, time.monotonic())
            self.lost.discard(key)
        self._start_heartbeat()
        return True

    def check(self, key: str) -> None:
        """Raise LeaseLost unless this worker still holds `key`: not taken over, heartbeat recent."""
        with self._lock:
            held = self.held.get(key)
            lost = key in self.lost
        if held is None or lost:
            raise LeaseLost(f"{key}: lease lost")
        gen, renewed = held
        if self._top(key) != gen:
            raise LeaseLost(f"{key}: taken over by another worker")
        if time.monotonic() - renewed > self.ttl / 2:
            # the heartbeat is late (a loaded machine, a paused process): still ours only if not yet expired
            path = self.dir / f"{key}.{gen}"
            age = self.clock() - path.stat().st_mtime
            if age >= self.ttl:
                raise LeaseLost(f"{key}: lease expired ({age:.1f}s since its last renewal)")
            os.utime(path)
            with self._lock:
                self.held[key] = (gen, time.monotonic())

    def release(self, key: str, remove: bool = False) -> None:
        """Stop renewing `key`; with `remove`, delete the claim so that another worker can take it at once."""
        with self._lock:
            held = self.held.pop(key, None)
            self.lost.discard(key)
        if held and remove and self._top(key) == held[0]:
            (self.dir / f"{key}.{held[0]}").unlink(missing_ok=True)

    def release_all(self, remove: bool = True) -> None:
        for key in list(self.held):
            self.release(key, remove=remove)
        self._stop.set()

    # --- heartbeat
    def _start_heartbeat(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            self.renew()

    def renew(self) -> None:
        with self._lock:
            held = dict(self.held)
        for key, (gen, _) in held.items():
            if self._top(key) != gen:
                log.warning("%s: lease taken over by another worker; this worker will not publish it", key)
                with self._lock:
                    self.lost.add(key)
                continue
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.dir / f"{key}.{gen}")
                with self._lock:
                    if self.held.get(key, (None,))[0] == gen:
                        self.held[key] = (gen, time.monotonic())

    # --- what was published, and by whom
    def record_done(self, key: str, info: dict) -> None:
        self._write_new(self.dir / f"{key}.done", json.dumps({"host": self.host, "pid": self.pid, **info}))

    def done_record(self, key: str) -> dict | None:
        path = self.dir / f"{key}.done"
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return None


def clear(stage_dir: Path) -> None:
    """Remove `.leases/` of a complete stage folder (its manifest written: nothing reads them any more). A
    late worker creating a file in it meanwhile can make one pass fail (not empty): hence a few; what is left
    then is that worker's, which clears it when it finds the manifest."""
    ldir = stage_dir / LEASES
    for _ in range(3):
        shutil.rmtree(ldir, ignore_errors=True)
        if not ldir.exists():
            return


def lease_status(stage_dir: Path, ttl_s: float) -> tuple[int | None, int, list[Claim]]:
    """(total shards or None, shards done, claims on shards not done) of a stage folder being worked; read-only
    (the clock is the newest lease's mtime: a reader does not write)."""
    ldir = stage_dir / LEASES
    if not ldir.is_dir():
        return None, 0, []
    try:
        total: int | None = int((ldir / "total").read_text())
    except (OSError, ValueError):
        total = None
    done = {p.name.split(".")[0] for p in stage_dir.glob("part-*.parquet")}
    tops: dict[str, tuple[int, Path]] = {}
    for p in ldir.glob("part-*.*"):
        stem, _, gen = p.name.partition(".")
        if gen.isdigit() and int(gen) > tops.get(stem, (0, p))[0]:
            tops[stem] = (int(gen), p)
    clocks = [p.stat().st_mtime for p in ldir.glob("clock-*")]
    now = max([time.time(), *clocks])
    claims = []
    for stem, (_, path) in sorted(tops.items()):
        if stem in done:
            continue
        with contextlib.suppress(OSError, ValueError):
            rec = json.loads(path.read_text())
            age = now - path.stat().st_mtime
            claims.append(Claim(int(stem.split("-")[1]), rec["host"], int(rec["pid"]), age, age < ttl_s))
    return total, len(done), claims
