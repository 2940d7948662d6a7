"""Prefect tasks, one module per stage: no ML logic here."""
