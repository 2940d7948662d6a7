"""W2S stage I's weak answers to the train_2 questions: selftrain.stages.w2s_answers, which both answer stages share
(they differ only in the model and the prompt)."""

from selftrain.stages.w2s_answers import run

__all__ = ["run"]
