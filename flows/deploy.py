"""Serve both flows as deployments on the Prefect server at PREFECT_API_URL:

prefect server start --host 127.0.0.1 &
PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.deploy
prefect deployment run 'self-training-iteration/selftrain' --param run=artifacts/runs/tiny-cpu --param iteration=0
"""

from __future__ import annotations

import argparse

from prefect import serve

from flows.iteration import iteration
from flows.self_training import self_training


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--name", default="selftrain", help="deployment name")
    args = parser.parse_args()
    serve(iteration.to_deployment(name=args.name), self_training.to_deployment(name=args.name))


if __name__ == "__main__":
    main()
