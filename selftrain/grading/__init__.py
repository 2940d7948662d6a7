"""Answer extraction and grading for GSM8K, MATH, multiple choice and the tiny arithmetic task.

Imports no Prefect and no torch, so `selftrain grade` starts fast.
"""

from selftrain.grading.grade import TASKS, extract_answer, grade, grade_rows, is_equivalent

__all__ = ["TASKS", "extract_answer", "grade", "grade_rows", "is_equivalent"]
