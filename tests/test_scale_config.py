"""Config for scaling out: vLLM tensor/pipeline parallelism for large models (validated, passed through; no
multi-GPU engine is started here: this machine has no GPU)."""

from __future__ import annotations

import pytest

from selftrain.config import ConfigError
from selftrain.engines.vllm_engine import engine_parallel_kwargs
from selftrain.recipes import load_config


def test_large_model_engine_settings_reach_vllm():
    cfg = load_config(
        None,
        [
            "engine.name=vllm",
            "engine.tensor_parallel_size=8",
            "engine.pipeline_parallel_size=2",
            "engine.distributed_executor_backend=mp",
        ],
    )
    assert engine_parallel_kwargs(cfg) == {
        "tensor_parallel_size": 8,
        "pipeline_parallel_size": 2,
        "distributed_executor_backend": "mp",
    }
    assert cfg.engine.gpus_per_engine == 16
    # a one-GPU engine is started exactly as before: no extra arguments
    assert engine_parallel_kwargs(load_config(None, ["engine.name=vllm"])) == {}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["engine.name=hf", "engine.tensor_parallel_size=4"], "needs engine.name vllm"),
        (["engine.tensor_parallel_size=0"], "invalid value for 'engine.tensor_parallel_size': 0"),
        (
            ["engine.distributed_executor_backend=slurm"],
            "invalid value for 'engine.distributed_executor_backend'",
        ),
        (
            [
                "engine.name=vllm",
                "engine.pipeline_parallel_size=2",
                "engine.distributed_executor_backend=uni",
            ],
            "needs distributed_executor_backend mp or ray",
        ),
    ],
)
def test_bad_large_model_settings_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config(None, overrides)
    assert "\n" not in str(e.value)


def test_placement_defaults_and_partial_sections(tmp_path):
    from tests.conftest import write_recipe

    recipe = write_recipe(
        tmp_path / "r.yaml", {"placement": {"sample": {"runs": 4}, "questions": {"pool": "io"}}}
    )
    p = load_config(recipe).placement
    assert p.dispatch == "local"  # one machine unless asked
    assert (p.sample.pool, p.sample.runs) == ("gpu", 4)  # the kind's pool kept when only runs is given
    assert (
        p.questions.pool == "io"
        and p.pairs.pool == "cpu"
        and p.train.pool == "gpu"
        and p.evaluate.pool == "gpu"
    )
    with pytest.raises(
        ConfigError, match="placement.train.runs is 2, but train is not a data-parallel stage"
    ):
        load_config(None, ["placement.train.runs=2"])


def _launch(tmp_path, **settings):
    import yaml

    from selftrain.training.launch import check_launch_config

    base = {"distributed_type": "MULTI_CPU", "num_processes": 4, "num_machines": 2, "machine_rank": 1}
    path = tmp_path / "acc.yaml"
    path.write_text(yaml.safe_dump({**base, **settings}))
    return check_launch_config(load_config(None, [f"training.accelerate_config={path}"]))


def test_multi_node_launch_fields_are_checked(tmp_path):
    ok = _launch(tmp_path, main_process_ip="10.0.0.1", main_process_port=29500)
    assert ok.settings["machine_rank"] == 1
    with pytest.raises(ConfigError, match="needs main_process_ip"):
        _launch(tmp_path, main_process_port=29500)
    with pytest.raises(ConfigError, match="needs main_process_port"):
        _launch(tmp_path, main_process_ip="10.0.0.1")
    with pytest.raises(ConfigError, match=r"machine_rank 2 is not in 0..1"):
        _launch(tmp_path, machine_rank=2, main_process_ip="10.0.0.1", main_process_port=29500)
    with pytest.raises(ConfigError, match="not a multiple of num_machines 2"):
        _launch(tmp_path, num_processes=3, main_process_ip="10.0.0.1", main_process_port=29500)
    # the shipped example passes as it is
    from selftrain.training.launch import check_launch_config
    from tests.conftest import ROOT

    path = ROOT / "configs" / "accelerate" / "multinode-example.yaml"
    example = load_config(None, [f"training.accelerate_config={path}", "training.bf16=true"])
    assert check_launch_config(example).settings["num_machines"] == 2


def test_multi_node_deepspeed_and_machine_rank(tmp_path):
    """DeepSpeed on several machines needs the `standard` launcher (each node starts its own ranks); the
    command of machine R carries --machine_rank R, in range."""
    from selftrain.training.launch import accelerate_command

    where = {"main_process_ip": "10.0.0.1", "main_process_port": 29500}
    with pytest.raises(ConfigError, match="deepspeed_multinode_launcher: standard"):
        _launch(tmp_path, distributed_type="DEEPSPEED", deepspeed_config={"zero_stage": 2}, **where)
    ds = {"zero_stage": 2, "deepspeed_multinode_launcher": "standard"}
    _launch(tmp_path, distributed_type="DEEPSPEED", deepspeed_config=ds, **where)
    cfg = load_config(None, [f"training.accelerate_config={tmp_path / 'acc.yaml'}"])
    cmd = accelerate_command(cfg, tmp_path, 0, machine_rank=1)
    assert cmd[cmd.index("--machine_rank") + 1] == "1" and "29500" not in cmd  # the port is the config's
    with pytest.raises(ConfigError, match=r"machine rank 2 is not in 0..1"):
        accelerate_command(cfg, tmp_path, 0, machine_rank=2)
