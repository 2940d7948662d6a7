"""GSI's SFT: the sft stage's trainer (selftrain.stages.sft) on the `rationales` stage's rows, every rationale
kept so far, with the plain question prompt; sft.train_from base (the method's default: a fresh adapter on the
base model each iteration, as STaR and the paper do) or previous."""

from selftrain.stages.sft import run, train_or_keep

__all__ = ["run", "train_or_keep"]
