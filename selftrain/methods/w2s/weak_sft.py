"""W2S's weak model: LoRA SFT of w2s.weak (built first where it is a tiny model with a bootstrap) on the gold
solutions of train_1, plain question prompt -> worked solution, on the sft stages' trainer and the run's
`training` settings. Its adapter answers train_2 (weak_answers) and is evaluated (w2s_evaluate)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from selftrain.config import Config
from selftrain.methods.w2s.core import gold_solution, split
from selftrain.prompts import PromptBuilder
from selftrain.stages.common import StageInputs
from selftrain.stages.train import finish_train, fit_or_keep
from selftrain.store import Manifest, StageWriter
from selftrain.tiny import ensure_model
from selftrain.training.sft import train_sft


def weak_config(cfg: Config) -> Config:
    """The run's config with the weak model in `model`: what every stage that runs the weak model loads."""
    return cfg.model_copy(update={"model": cfg.w2s.weak})


def lead(cfg: Config) -> str:
    """The plain template's completions start with a space (` 4*2=8 ...`: how the tiny model was trained)."""
    return " " if cfg.prompt.template == "plain" else ""


def train_or_keep(cfg: Config, inputs: StageInputs, out_dir: Path, main_process: bool = True) -> dict:
    from transformers import AutoTokenizer

    weak = weak_config(cfg)
    ensure_model(weak.model.path, weak.model.bootstrap)
    builder = PromptBuilder(
        AutoTokenizer.from_pretrained(weak.model.path),
        cfg.prompt.template,
        cfg.prompt.system,
        cfg.prompt.one_shot,
    )
    train_1, _ = split(inputs.table("questions").to_pylist(), cfg.w2s.train_1_size)
    rows = [
        {
            "question_id": q["question_id"],
            "prompt": builder.question(q["question"], q["choices"]),
            "chosen": lead(cfg) + gold_solution(q),
        }
        for q in train_1
    ]
    schema = pa.schema([(n, pa.string()) for n in ("question_id", "prompt", "chosen")])
    table = pa.Table.from_pylist(rows, schema=schema)
    return fit_or_keep(weak, inputs, out_dir, table, None, train_sft, "SFT examples", main_process)


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest:
    return finish_train(writer, inputs, train_or_keep(cfg, inputs, writer.dir))
