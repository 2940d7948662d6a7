"""`selftrain verify RUN`: every completed stage's files against their sha256 in the manifest.

Damaged stages are marked (`.damaged.json` in the stage folder, so `status` and `run` report them until they
are redone) and each damaged iteration gets the `selftrain rerun` command that repairs it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from selftrain.fileio import atomic_write_text
from selftrain.plan import rerun_command
from selftrain.spec import STAGES
from selftrain.store import DAMAGED, RunStore, damage, now, remove_marker


@dataclass
class Checked:
    stages: int = 0
    files: int = 0
    bytes: int = 0


def verify_run(store: RunStore) -> tuple[Checked, list[tuple[int, str, list[str]]]]:
    """(what was checked, [(iteration, stage, problems)] for each damaged stage). Marks and unmarks stages."""
    checked = Checked()
    damaged = []
    for it in store.iterations_on_disk():
        for stage in STAGES:
            d = store.stage_dir(it, stage)
            manifest = store.manifest(it, stage)
            if manifest is None:
                continue
            entries = [*manifest.shards, *manifest.files]
            checked.stages += 1
            checked.files += len(entries)
            checked.bytes += sum((d / e.name).stat().st_size for e in entries if (d / e.name).is_file())
            problems = damage(d, manifest, checksums=True)
            if problems:
                damaged.append((it, stage, problems))
                atomic_write_text(d / DAMAGED, json.dumps({"problems": problems, "at": now()}))
            else:
                remove_marker(d, DAMAGED)  # repaired by hand since the last verify
    return checked, damaged


def repairs(store: RunStore, damaged: list[tuple[int, str, list[str]]]) -> list[str]:
    """One rerun per damaged iteration, from its earliest damaged stage (a rerun redoes what follows it)."""
    first: dict[int, str] = {}
    for it, stage, _ in damaged:
        if it not in first or STAGES.index(stage) < STAGES.index(first[it]):
            first[it] = stage
    return [rerun_command(store, it, stage) for it, stage in sorted(first.items())]
