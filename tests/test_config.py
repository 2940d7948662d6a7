from __future__ import annotations

import pytest

from selftrain.config import Config, ConfigError
from selftrain.recipes import load_config

from .conftest import ROOT, cli, write_recipe


def test_defaults_and_embedded_recipe_validate():
    assert Config().sampling.n == 5
    cfg = load_config(ROOT / "configs" / "tiny-cpu.yaml")
    assert cfg.prompt.template == "plain"
    assert cfg.model.bootstrap is not None


def test_precedence_defaults_recipe_overrides(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", {"sampling": {"temperature": 0.7}})
    assert load_config(recipe).sampling.temperature == 0.7
    assert load_config(recipe).sampling.top_p == 0.9  # default kept
    cfg = load_config(recipe, ["sampling.temperature=0.3", "data.train.0.limit=5"])
    assert cfg.sampling.temperature == 0.3
    assert cfg.data.train[0].limit == 5


def test_unknown_key_suggests_closest(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", {"sampling": {"temprature": 0.7}})
    with pytest.raises(
        ConfigError, match=r"unknown config key 'sampling.temprature'.*did you mean 'sampling.temperature'"
    ):
        load_config(recipe)
    with pytest.raises(ConfigError, match="did you mean 'training.learning_rate'"):
        load_config(None, ["training.learning_rte=1e-4"])


def test_wrong_type_names_field_and_value(tmp_path):
    with pytest.raises(ConfigError, match=r"invalid value for 'sampling.n': 'many'"):
        load_config(None, ["sampling.n=many"])
    with pytest.raises(ConfigError, match=r"sampling.top_p.*1.5"):
        load_config(None, ["sampling.top_p=1.5"])


def test_unknown_registry_names_suggest():
    with pytest.raises(ConfigError, match="did you mean 'core_po'"):
        load_config(None, ["judge.name=core-po"])
    with pytest.raises(ConfigError, match="did you mean 'gsm8k'"):
        load_config(None, ["data.train.0.name=gsm8"])


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampling: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_cli_rejects_bad_config_with_one_line(tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml", {"sampling": {"temprature": 0.7}, "store": {"root": str(tmp_path)}}
    )
    proc = cli("run", str(recipe), "--no-prefect")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "sampling.temperature" in lines[0], proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "launch", sorted((ROOT / "configs" / "accelerate").glob("*.yaml")), ids=lambda p: p.name
)
def test_shipped_accelerate_configs_pass_the_launch_check(launch):
    """Every launch config we ship is accepted with the matching precision and rejected with the other one
    when it is bf16 (a mismatch would fail minutes later inside DeepSpeed)."""
    from selftrain.training.launch import accelerate_command

    bf16 = "mixed_precision: bf16" in launch.read_text()
    cfg = load_config(ROOT / "configs" / "tiny-cpu.yaml", [f"training.accelerate_config={launch}"])
    cfg.training.bf16 = bf16
    cmd = accelerate_command(cfg, ROOT / "artifacts" / "runs" / "x", 0)
    assert cmd[cmd.index("--config_file") + 1] == str(launch)
    if "--deepspeed_config_file" in cmd:
        assert (ROOT / "configs" / "accelerate" / cmd[cmd.index("--deepspeed_config_file") + 1]).is_file()
    if bf16:
        cfg.training.bf16 = False
        with pytest.raises(ConfigError, match="training.bf16 is false"):
            accelerate_command(cfg, ROOT / "artifacts" / "runs" / "x", 0)


def test_paper_recipe_launches_zero2_on_four_gpus():
    import yaml

    cfg = load_config(ROOT / "configs" / "llama3.1-8b-core-po.yaml")
    t = cfg.training
    assert (t.lora.r, t.lora.alpha, t.lora.dropout, t.beta, t.learning_rate) == (128, 256, 0.05, 0.1, 5e-6)
    assert t.bf16 and t.gradient_checkpointing and t.save_steps == 200 and t.max_grad_norm == 1.0
    launch = yaml.safe_load((ROOT / t.accelerate_config).read_text())
    assert launch["num_processes"] == 4 and launch["deepspeed_config"]["zero_stage"] == 2


def test_bad_recipe_with_overrides_is_still_one_line(tmp_path):
    """A recipe error together with --set used to escape as a pydantic traceback."""
    recipe = write_recipe(tmp_path / "r.yaml", {"sampling": {"temprature": 0.7}})
    with pytest.raises(ConfigError, match=r"unknown config key 'sampling.temprature'.*temperature"):
        load_config(recipe, ["run.iterations=1"])
    proc = cli("run", str(recipe), "--set", "run.iterations=1", "--no-prefect")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_auto_engine_picks_vllm_when_importable(monkeypatch):
    from selftrain.engines import base

    monkeypatch.setattr(base, "vllm_available", lambda: True)
    assert base.resolve_engine_name("auto") == "vllm"
    monkeypatch.setattr(base, "vllm_available", lambda: False)
    assert base.resolve_engine_name("auto") == "hf"
    assert base.resolve_engine_name("hf") == "hf"
