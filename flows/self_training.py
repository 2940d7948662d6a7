"""The `self-training` flow: N iterations, resuming from whatever the store says is complete."""

from __future__ import annotations

from prefect import flow

from flows import route_selftrain_logs
from flows.iteration import iteration as iteration_flow
from selftrain.store import RunStore


@flow(name="self-training")
def self_training(run: str, iterations: int, rebuild_stale: bool = False) -> list[dict]:
    route_selftrain_logs()
    with RunStore(run).lock():
        return [iteration_flow(run, i, rebuild_stale) for i in range(iterations)]
