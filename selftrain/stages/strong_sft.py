"""W2S stage I's training: the sft stage's trainer (selftrain.stages.sft) on the `agree` stage's rows, both
rationales of every agreed train_2 question, LoRA on the strong model (`model`, training.lora)."""

from selftrain.stages.sft import run, train_or_keep

__all__ = ["run", "train_or_keep"]
