"""`placement`: which Prefect work pool runs each stage kind, and how (placement.<stage>.pool, .runs,
.job_variables), used when `placement.dispatch` is `pools`. One field per stage kind of selftrain.spec, so a
stage added there gets its placement here with no edit: kinds with a model default to the `gpu` pool, the rest
(questions, pairs, filter: seconds, no model) to `cpu`."""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

from pydantic import Field, create_model, model_validator

from selftrain.config.base import Section
from selftrain.spec import KINDS, Runs


class StagePlacement(Section):
    pool: str = Field(
        description="Prefect work pool whose workers run this stage (deployment selftrain-stage/<pool>)."
    )
    runs: int = Field(
        1,
        ge=1,
        description="Flow runs sent to the pool for this stage; more than 1 only for data-parallel stages "
        "(sample, score, evaluate, initial): each extra run is one more worker claiming the stage's shards.",
    )
    job_variables: dict[str, Any] = Field(
        default_factory=dict,
        description="Prefect job variables of those flow runs, over the pool's base job template "
        "(process pool: env, working_dir; e.g. {env: {CUDA_VISIBLE_DEVICES: '0,1'}}).",
    )


def default_pool(stage: str) -> str:
    return "cpu" if KINDS[stage].runs is Runs.INLINE else "gpu"


class _Placement(Section):
    dispatch: Literal["local", "pools"] = Field(
        "local",
        description="local: every stage runs where the iteration flow runs (one machine, `--no-prefect`, a "
        "single `serve`); pools: each stage is a flow run of deployment selftrain-stage/<its pool>, picked up "
        "by a worker of that pool (flows/stage.py).",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_pools(cls, data: Any) -> Any:
        # a stage given only some keys (`placement.sample.runs: 2`) keeps its kind's default pool
        if isinstance(data, dict):
            for name, value in data.items():
                if name in KINDS and isinstance(value, dict) and "pool" not in value:
                    data = {**data, name: {**value, "pool": default_pool(name)}}
        return data

    @model_validator(mode="after")
    def _runs_need_parallel(self) -> _Placement:
        for name, spec in KINDS.items():
            runs = getattr(self, name).runs
            if runs > 1 and not spec.parallel:
                raise ValueError(f"placement.{name}.runs is {runs}, but {name} is not a data-parallel stage")
        return self


PlacementConfig = create_model(  # type: ignore[call-overload]
    "PlacementConfig",
    __base__=_Placement,
    __doc__=__doc__,
    **{
        name: (
            StagePlacement,
            Field(
                default_factory=partial(StagePlacement, pool=default_pool(name)),
                description=f"Where the {name} stage runs (default pool: {default_pool(name)}).",
            ),
        )
        for name in KINDS
    },
)
