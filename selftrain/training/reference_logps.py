"""Reference log-probs computed once and kept as data (training.precompute_ref_logps).

DPO needs log p_ref(chosen) and log p_ref(rejected) for every pair. TRL computes them with a reference forward
pass in every step; with `precompute_ref_log_probs` it computes them once before training (its own
`compute_ref_log_probs`, so the values are TRL's by construction) but keeps them only in the datasets cache.
Here they are stored in the run folder under a key of everything they depend on — the pairs' text, the
reference model (the base, or adapter i-1's weights for `training.reference: previous`), the tokenisation
length and precision — so a resumed training and a rerun of the train stage read them back instead of running
the reference model again, and a change to any of those makes a new key (the old values are never reused).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from selftrain.filehash import cached_sha256
from selftrain.fileio import atomic_write_text, sha256_file

log = logging.getLogger(__name__)

SCHEMA = pa.schema([("ref_chosen_logps", pa.float64()), ("ref_rejected_logps", pa.float64())])
DATA, META = "reference_logps.parquet", "meta.json"


def table_sha256(table: pa.Table) -> str:
    """The content of the pairs (prompt, chosen, rejected, in order), independent of how it was sharded."""
    digest = hashlib.sha256()
    for column in ("prompt", "chosen", "rejected"):
        for value in table.column(column).to_pylist():
            digest.update(value.encode() + b"\0")
    return digest.hexdigest()


def cache_key(pairs: pa.Table, reference: dict[str, Any], max_length: int, bf16: bool) -> str:
    """Content-addressed: the pairs' text and the reference model's identity, not their paths or run ids."""
    import trl

    parts = {
        "pairs": table_sha256(pairs),
        "reference": reference,
        "max_length": max_length,
        "bf16": bf16,
        "trl": trl.__version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def weight_files(model_dir: Path) -> list[Path]:
    """The files holding a saved model's weights: model.safetensors, or a sharded save's index and every shard
    it names (the same for the older pytorch_model.bin format); empty when there are none (a hub id)."""
    for single, index in (
        ("model.safetensors", "model.safetensors.index.json"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        if (model_dir / single).is_file():
            return [model_dir / single]
        if (model_dir / index).is_file():
            shards = sorted(set(json.loads((model_dir / index).read_text())["weight_map"].values()))
            return [model_dir / index, *(model_dir / name for name in shards)]
    return []


def reference_identity(model_path: str, reference: str, init_adapter: str | None) -> dict[str, Any]:
    """What the reference forward reads: the base weights, plus adapter i-1's when it is the reference.
    Weights are hashed by content (remembered across runs by selftrain.filehash, so a large model is read
    once, not in every train stage)."""
    ident: dict[str, Any] = {"model": str(model_path), "kind": reference}
    files = weight_files(Path(model_path))
    if [f.name for f in files] == ["model.safetensors"]:
        ident["model_sha256"] = cached_sha256(files[0])  # the key single-file models have always had
    elif files:
        ident["model_files_sha256"] = {f.name: cached_sha256(f) for f in files}
    else:
        log.warning(
            "no weight files found in %s: the reference log-prob cache is keyed by its path", model_path
        )
    if reference == "previous" and init_adapter:
        ident["adapter_sha256"] = sha256_file(Path(init_adapter) / "adapter_model.safetensors")
    return ident


def load(cache_dir: Path, rows: int) -> pa.Table | None:
    """The stored values when complete (meta written last) and of the expected length, else None."""
    meta_path = cache_dir / META
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    data = cache_dir / DATA
    if not data.is_file() or sha256_file(data) != meta.get("sha256") or meta.get("rows") != rows:
        log.warning("%s does not match its meta.json: computing the reference log-probs again", cache_dir)
        return None
    return pq.read_table(data, schema=SCHEMA)


def save(cache_dir: Path, chosen: list[float], rejected: list[float], details: dict[str, Any]) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{DATA}.tmp"
    pq.write_table(pa.table({"ref_chosen_logps": chosen, "ref_rejected_logps": rejected}, schema=SCHEMA), tmp)
    tmp.replace(cache_dir / DATA)
    meta = {"rows": len(chosen), "sha256": sha256_file(cache_dir / DATA), **details}
    atomic_write_text(cache_dir / META, json.dumps(meta, indent=2))


def caching_trainer_class(cache_dir: Path, details: dict[str, Any], record: dict[str, Any]) -> type:
    """A DPOTrainer whose reference pre-computation reads `cache_dir` when it holds the values and writes
    them there after computing them; `record` receives what happened (for the stage's manifest)."""
    from trl import DPOTrainer

    class CachingDPOTrainer(DPOTrainer):
        def _precompute_ref_logps(self, dataset, name, batch_size):  # noqa: ANN001, ANN202 - TRL's signature
            if name != "train":
                return super()._precompute_ref_logps(dataset, name, batch_size)
            stored = load(cache_dir, len(dataset))
            if stored is not None:
                record.update(reused=True, key=cache_dir.name)
                log.info("reference log-probs read from %s (the reference model is not run)", cache_dir)
                for column in SCHEMA.names:
                    dataset = dataset.add_column(column, stored.column(column).to_pylist())
                return dataset
            import time

            start = time.perf_counter()
            chosen, rejected = self._reference_pass(dataset, batch_size)
            seconds = round(time.perf_counter() - start, 3)
            if self.accelerator.is_main_process:
                save(cache_dir, chosen, rejected, details)
            self.accelerator.wait_for_everyone()
            record.update(reused=False, key=cache_dir.name, seconds=seconds)
            log.info("reference log-probs computed in %.1fs and kept in %s", seconds, cache_dir)
            return dataset.add_column("ref_chosen_logps", chosen).add_column("ref_rejected_logps", rejected)

        def _reference_pass(self, dataset, batch_size):  # noqa: ANN001, ANN202
            """TRL's own pass (its collator, `compute_ref_log_probs`, the gather across ranks), without its
            hand-off through the datasets cache: for an in-memory dataset that cache lives in a per-process
            temp folder, so under `accelerate launch` rank 1 looked for rank 0's file and failed."""
            import torch
            from torch.utils.data import DataLoader
            from trl.models import prepare_deepspeed

            loader = DataLoader(
                dataset, batch_size=batch_size, collate_fn=self.data_collator, num_workers=0, shuffle=False
            )
            loader = self.accelerator.prepare(loader)
            # before `train` prepares the model: with DeepSpeed its parameters are still on CPU / sharded
            if self.ref_model is None and self.is_deepspeed_enabled:
                if self._precompute_engine is None:
                    self._precompute_engine = prepare_deepspeed(self.model, self.accelerator)
                model = self._precompute_engine
            else:
                model = self.ref_model or self.model
            chosen, rejected = [], []
            for batch in loader:
                c, r = self.compute_ref_log_probs(model, batch)
                c, r = self.accelerator.gather_for_metrics((c, r))
                chosen.append(c.float().cpu())
                rejected.append(r.float().cpu())
            if self._precompute_engine is not None:
                # That engine wraps the policy module itself. Under ZeRO-3 its parameter hooks stay on the
                # module, so the training engine's first forward ran two sets of hooks and DeepSpeed's
                # parameter trace broke ("IndexError: pop from an empty deque", every rank, exit 1). Only
                # a first attempt crashed: a rerun read the values from the cache and never built this engine.
                self._precompute_engine.destroy()
                self._precompute_engine = None
            return torch.cat(chosen).tolist(), torch.cat(rejected).tolist()

    return CachingDPOTrainer
