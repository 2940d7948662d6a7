"""Serve both flows as deployments on the Prefect server at PREFECT_API_URL:

prefect server start --host 127.0.0.1 &
PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.deploy
prefect deployment run 'self-training-iteration/selftrain' --param run=artifacts/runs/tiny-cpu --param iteration=0

Several machines (placement.dispatch: pools): register the stage flow once per work pool, then start workers:

python -m flows.deploy --stage-pools gpu cpu          # deployments selftrain-stage/gpu, selftrain-stage/cpu
prefect worker start --pool gpu --type process --limit 1   # on each GPU node (SELFTRAIN_HOME: the checkout)
"""

from __future__ import annotations

import argparse
import os

from flows.zombies import HEARTBEAT_S


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--name", default="selftrain", help="deployment name")
    parser.add_argument(
        "--heartbeat-seconds",
        type=int,
        default=int(os.environ.get("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", HEARTBEAT_S)),
        help=f"flow-run heartbeat (default {HEARTBEAT_S}); a run silent for 3 of them is marked CRASHED",
    )
    parser.add_argument(
        "--stage-pools",
        nargs="+",
        metavar="POOL",
        help="register deployment selftrain-stage/<POOL> for each work pool (creating process pools that do not "
        "exist) and exit: the stage flow that placement.dispatch: pools sends stages to",
    )
    args = parser.parse_args()
    if args.stage_pools:
        deploy_stage_pools(args.stage_pools)
        return
    # before Prefect is imported: its settings are read then, and the runs `serve` starts inherit them
    os.environ["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(args.heartbeat_seconds)
    from prefect import serve

    from flows.iteration import iteration
    from flows.self_training import self_training
    from flows.zombies import ensure_zombie_automation

    ensure_zombie_automation(args.heartbeat_seconds)
    serve(iteration.to_deployment(name=args.name), self_training.to_deployment(name=args.name))


def deploy_stage_pools(pools: list[str]) -> None:
    """Deployment selftrain-stage/<pool> of flows/stage.py for each pool, from this checkout (workers run the
    flow from the same path: a shared filesystem, or the same checkout on each node)."""
    from pathlib import Path

    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    from flows.stage import stage

    with get_client(sync_client=True) as client:
        for pool in pools:
            try:
                client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            except ObjectAlreadyExists:
                pass
    root = Path(__file__).resolve().parents[1]
    for pool in pools:
        flow = stage.from_source(source=str(root), entrypoint="flows/stage.py:stage")
        flow.deploy(name=pool, work_pool_name=pool, print_next_steps=False)


if __name__ == "__main__":
    main()
