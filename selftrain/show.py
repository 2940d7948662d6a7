"""`selftrain show`: what a stage folder or shard holds: manifest, schema, row count, head, column stats."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from selftrain.store import MANIFEST, StoreError, load_manifest, read_shard, read_stage


def _clip(value: object, width: int = 100) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else value
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"


def _column_stats(table: pa.Table) -> list[str]:
    lines = []
    for name in table.column_names:
        col = table.column(name)
        nulls = col.null_count
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            if len(col) - nulls:
                mm = pc.min_max(col)
                mean = pc.mean(col).as_py()
                lines.append(
                    f"  {name}: min {mm['min'].as_py()}, mean {mean:.4g}, max {mm['max'].as_py()}, nulls {nulls}"
                )
        elif pa.types.is_boolean(col.type):
            true = pc.sum(col.cast(pa.int64())).as_py() or 0
            lines.append(f"  {name}: true {true} / {len(col) - nulls}, nulls {nulls}")
        elif pa.types.is_string(col.type):
            distinct = len(pc.unique(col))
            lines.append(f"  {name}: {distinct} distinct, nulls {nulls}")
    return lines


def describe(path: Path, head: int = 3) -> str:
    if not path.exists():
        raise StoreError(f"no such stage folder or shard: {path}")
    out: list[str] = []
    if path.is_dir():
        manifest = load_manifest(path)
        if manifest is None:
            shards = sorted(path.glob("part-*.parquet"))
            out.append(f"{path}: incomplete (no {MANIFEST}); {len(shards)} finished shard(s)")
            if not shards:
                return "\n".join(out)
            table = pa.concat_tables([read_shard(s) for s in shards])
        else:
            out.append(
                f"{path}: {manifest.stage} of iteration {manifest.iteration}, {len(manifest.shards)} shard(s), "
                f"{manifest.rows} rows, fingerprint {manifest.fingerprint}, finished {manifest.finished_at}"
            )
            out.append("stats: " + json.dumps(manifest.stats, default=str))
            if manifest.files:
                out.append("files: " + ", ".join(f.name for f in manifest.files))
            if not manifest.shards:
                return "\n".join(out)
            table = read_stage(path)
    else:
        table = read_shard(path)
        out.append(f"{path}: {table.num_rows} rows")
    out.append("schema:")
    out += [f"  {f.name}: {f.type}" for f in table.schema]
    out.append("columns:")
    out += _column_stats(table)
    out.append(f"head ({min(head, table.num_rows)} of {table.num_rows}):")
    for i, row in enumerate(table.slice(0, head).to_pylist()):
        out.append(f"  [{i}]")
        out += [f"    {k}: {_clip(v)}" for k, v in row.items()]
    return "\n".join(out)
