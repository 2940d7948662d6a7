"""Prefect tasks: one per stage kind (tasks/stages.py, from selftrain.spec) and the report tasks; no ML logic here."""
