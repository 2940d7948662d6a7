"""Export a trained policy: the adapter as it is, or merged into the base weights.

Merging loads the whole model, so `selftrain export --merge` runs it here, in a separate process:
    python -m selftrain.training.export BASE_MODEL ADAPTER_DIR OUT_DIR
A vllm stage that serves a merged policy (engine.lora) calls `merge_and_save` in its own process instead: the
stage is already a process of its own that has torch and transformers imported, and a child would import them
again (~5 s of each ~8 s merge of SmolLM2 on 2 cores).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from selftrain.logs import setup_logging

log = logging.getLogger(__name__)


def export_adapter(adapter: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        shutil.copy2(adapter / name, out / name)


def export_merged(base: str, adapter: Path, out: Path, dtype: str = "stored") -> None:
    """Merge in a child process (so its memory is returned), writing to a temp folder renamed at the end.
    dtype: the saved weights' dtype, "stored" for the base model's own."""
    cmd = [sys.executable, "-m", "selftrain.training.export", base, str(adapter), str(out), "--dtype", dtype]
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise RuntimeError(f"merging {adapter} into {base} failed (exit code {proc.returncode})")


def merge_and_save(base: str, adapter: Path, out: Path, dtype: str = "stored") -> None:
    """Merge `adapter` into `base` in this process and save it to `out` (a temp folder renamed at the end).
    dtype: the saved weights' dtype, "stored" for the base model's own."""
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    # merged in float32 (no rounding of the LoRA delta), saved in the dtype the base model is stored in: a bf16
    # model (SmolLM2) stays half the size of a float32 copy. Tied embeddings stay tied (LoRA targets no
    # embedding, and save_pretrained writes the shared tensor once).
    stored = getattr(AutoConfig.from_pretrained(base), "dtype", None) or torch.float32
    if dtype != "stored":
        stored = dtype
    merged = merged.to(getattr(torch, stored) if isinstance(stored, str) else stored)
    merged.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp)
    os.replace(tmp, out)
    log.info("merged model written to %s", out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m selftrain.training.export")
    p.add_argument("base")
    p.add_argument("adapter")
    p.add_argument("out")
    p.add_argument("--dtype", default="stored", help="float32, bfloat16, ... or stored (the base model's)")
    args = p.parse_args(argv)
    setup_logging()
    merge_and_save(args.base, Path(args.adapter), Path(args.out), args.dtype)
    return 0


if __name__ == "__main__":
    sys.exit(main())
