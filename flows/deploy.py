"""Serve both flows as deployments on the Prefect server at PREFECT_API_URL:

prefect server start --host 127.0.0.1 &
PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.deploy
prefect deployment run 'self-training-iteration/selftrain' --param run=artifacts/runs/tiny-cpu --param iteration=0
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
    args = parser.parse_args()
    # before Prefect is imported: its settings are read then, and the runs `serve` starts inherit them
    os.environ["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(args.heartbeat_seconds)
    from prefect import serve

    from flows.iteration import iteration
    from flows.self_training import self_training
    from flows.zombies import ensure_zombie_automation

    ensure_zombie_automation(args.heartbeat_seconds)
    serve(iteration.to_deployment(name=args.name), self_training.to_deployment(name=args.name))


if __name__ == "__main__":
    main()
