"""Reference log-probs computed once and kept as data: the values are TRL's own (same loss curve as TRL's
per-step reference), a resume or rerun reads them back without running the reference model, and a change of
reference makes a new key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _pairs(path: Path) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {
            "prompt": f"<bos>Q: {a}+{b}=?\nA:",
            "chosen": f" {a}+{b}={a + b} #### {a + b}",
            "rejected": f" {a} #### {a}",
        }
        for a in range(2, 9)
        for b in (3, 4)
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def _train(model: Path, files, out: Path, cache: Path, precompute: bool, init=None, reference="base"):
    from selftrain.recipes import load_config
    from selftrain.training.dpo import train_dpo

    cfg = load_config(
        None,
        [
            f"model.path={model}",
            f"training.precompute_ref_logps={str(precompute).lower()}",
            f"training.reference={reference}",
            "training.lora.r=4",
            "training.lora.alpha=8",
            "training.learning_rate=5e-3",
            "training.max_steps=4",
            "training.save_steps=2",
            "training.per_device_batch_size=4",
            "training.logging_steps=1",
            "training.max_length=64",
        ],
    )
    stats = train_dpo(cfg, files, out, init, ref_cache_root=cache)
    history = [h for h in json.loads((out / "log_history.json").read_text()) if "loss" in h]
    return stats, history


# Float32 on CPU: the precomputed pass batches the pairs differently (4x the batch, other padding), which moves
# log-probs by float rounding only (~1e-6 relative). 1e-4 on losses and rewards is far below any real difference
# (a wrong token or a wrong reference moves them by > 1e-2 here).
TOL = 1e-4


@pytest.mark.slow
def test_precomputed_reference_logps_match_trl_and_are_reused(tiny_model, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    files = pq.read_table(_pairs(tmp_path / "pairs.parquet"))
    cache = tmp_path / "cache"
    _, per_step = _train(tiny_model, files, tmp_path / "trl", cache, precompute=False)
    stats, pre = _train(tiny_model, files, tmp_path / "ours", cache, precompute=True)
    assert stats["reference_logps"]["reused"] is False
    assert len(pre) == len(per_step) == 4
    for a, b in zip(pre, per_step, strict=True):
        for k in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins"):
            assert a[k] == pytest.approx(b[k], abs=TOL), (k, a, b)

    # rerun (a fresh output folder) and resume (the same folder, from its checkpoint): the reference model
    # must not run again
    from trl import DPOTrainer

    def no_reference_forward(*args, **kwargs):
        raise AssertionError("the reference model ran again")

    monkeypatch.setattr(DPOTrainer, "compute_ref_log_probs", no_reference_forward)
    stats, rerun = _train(tiny_model, files, tmp_path / "rerun", cache, precompute=True)
    assert stats["reference_logps"]["reused"] is True
    assert [h["loss"] for h in rerun] == pytest.approx([h["loss"] for h in pre], abs=1e-6)
    (tmp_path / "ours" / "adapter_model.safetensors").unlink()
    stats, _ = _train(tiny_model, files, tmp_path / "ours", cache, precompute=True)
    assert stats["reference_logps"]["reused"] is True and stats["resumed_from"] == "checkpoint-4"

    # another reference (adapter i-1 instead of the base): another key, computed again
    monkeypatch.undo()
    stats, _ = _train(
        tiny_model,
        files,
        tmp_path / "prev",
        cache,
        precompute=True,
        init=str(tmp_path / "rerun"),
        reference="previous",
    )
    assert stats["reference_logps"]["reused"] is False
    assert len(list(cache.iterdir())) == 2


def test_sharded_model_is_keyed_by_its_index_and_every_shard_hashed_once(tmp_path, monkeypatch):
    """A sharded save (index + shards) is keyed by content, not only by its path: changing any shard changes
    the key; the digests are remembered across processes by (path, size, mtime), so an unchanged model is not
    read again."""
    import os

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from selftrain import filehash
    from selftrain.training import reference_logps as refs

    monkeypatch.setenv("SELFTRAIN_HASH_CACHE", str(tmp_path / "hashes"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4)
    model = tmp_path / "sharded"
    LlamaForCausalLM(config).save_pretrained(model, max_shard_size="40KB")
    shards = sorted(model.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 3 and not (model / "model.safetensors").exists()

    read = []
    real = filehash.sha256_file
    monkeypatch.setattr(filehash, "sha256_file", lambda p: read.append(Path(p).name) or real(p))
    first = refs.reference_identity(str(model), "base", None)
    hashed = first["model_files_sha256"]
    assert set(hashed) == {"model.safetensors.index.json", *(s.name for s in shards)}
    assert sorted(read) == sorted(hashed)  # every file read once

    read.clear()
    assert refs.reference_identity(str(model), "base", None) == first
    assert read == []  # a later run: every digest from the cache, no weights read

    # one shard rewritten with other values (same size): only that shard is read again, and the key changes
    data = bytearray(shards[-1].read_bytes())
    data[-8:] = bytes(8 - i for i in range(8))
    shards[-1].write_bytes(bytes(data))
    st = shards[-1].stat()
    os.utime(shards[-1], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # coarse clocks: a new mtime
    second = refs.reference_identity(str(model), "base", None)
    assert read == [shards[-1].name]
    assert second["model_files_sha256"][shards[-1].name] != hashed[shards[-1].name]
    assert second != first
