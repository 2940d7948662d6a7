"""The `selftrain-stage` flow: one stage of one iteration, run by a worker of the stage's work pool.

With `placement.dispatch: pools` the iteration flow (through tasks/common.py) starts each stage as a flow run of
deployment `selftrain-stage/<pool>` (`placement.<stage>.pool`), plus `placement.<stage>.runs - 1` more runs of
a data-parallel stage with `join`: each is one more worker claiming the stage's shards with leases, the last
one writes the manifest. Deployments are keyed by pool, not by stage kind: a run's placement is its config, a
deployment's pool is fixed when it is deployed, so one deployment per pool lets any run place any stage.
"""

from __future__ import annotations

from prefect import flow

from flows import route_selftrain_logs


@flow(name="selftrain-stage")
def stage(
    run: str,
    iteration: int,
    stage: str,
    rebuild_stale: bool = False,
    join: bool = False,
    machine_rank: int = 0,
) -> dict:
    """Run `stage` of `iteration` of the run folder `run` (skips it if complete, resumes it if partial); with
    `join`, work its shards beside the run that started it; with `machine_rank` R > 0, be machine R of a
    multi-node training whose head (the run with rank 0) publishes its address in the run folder."""
    import os

    from selftrain.pipeline import execute_stage
    from selftrain.recipes import load_config
    from selftrain.runlock import host_id
    from selftrain.stages.worker import work
    from selftrain.store import RunStore
    from selftrain.training.node import machines, publish_head, run_node, wait_for_head

    route_selftrain_logs()
    store = RunStore(run)
    if join:
        wrote = work(store, iteration, stage) is not None
        return {"stage": stage, "host": host_id(), "joined": True, "wrote_manifest": wrote}
    cfg = load_config(store.config_path)
    if machine_rank > 0:
        head = wait_for_head(store, iteration, stage, wait_s=3600)
        code = run_node(store, iteration, stage, machine_rank, wait_s=3600, main_process_ip=head)
        if code:
            raise RuntimeError(
                f"iter-{iteration:03d}/{stage}: machine rank {machine_rank} exited with {code}"
            )
        return {"stage": stage, "host": host_id(), "machine_rank": machine_rank, "head": head}
    if machines(cfg) > 1:  # this run is the head, wherever the pool placed it: the others meet it here
        os.environ["SELFTRAIN_MAIN_PROCESS_IP"] = publish_head(store, iteration, stage)
    manifest = execute_stage(cfg, store, iteration, stage, rebuild_stale=rebuild_stale)
    return {"stage": stage, "host": host_id(), "joined": False, "rows": manifest.rows}
