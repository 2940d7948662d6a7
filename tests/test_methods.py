"""Methods as DAGs of stage kinds: the registry, checks of a method's DAG, its config defaults, and that
CORE-PO and SC-PO are the same stages with the same fingerprints as the config they stand for."""

from __future__ import annotations

import pytest

from selftrain.config import ConfigError, load_config
from selftrain.methods import METHODS, Method
from selftrain.plan import dag, method_stages, policy_stage, ready, stage_config
from selftrain.spec import STAGES


def test_method_picks_its_defaults_unless_the_recipe_sets_them():
    sc = load_config(None, ["method=sc_po"])
    assert (sc.judge.name, sc.pairs.builder) == ("self_consistency", "majority_vs_minority")
    mixed = load_config(None, ["method=sc_po", "judge.name=core_po"])
    assert (mixed.judge.name, mixed.pairs.builder) == ("core_po", "majority_vs_minority")
    core = load_config(None)
    assert (core.method, core.judge.name, core.pairs.builder) == ("core_po", "core_po", "best_vs_rest")


def test_unknown_method_is_one_line_with_a_suggestion(tmp_path):
    with pytest.raises(ConfigError, match="unknown method 'scpo' \\(did you mean 'sc_po'\\?\\)"):
        load_config(None, ["method=scpo"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: core-po\n")
    with pytest.raises(ConfigError, match=f"{recipe}: unknown method 'core-po' \\(did you mean 'core_po'"):
        load_config(recipe)


def test_sc_po_is_the_preference_chain_with_the_self_consistency_config():
    by_method = load_config(None, ["method=sc_po", "engine.name=hf"])
    by_keys = load_config(
        None, ["judge.name=self_consistency", "pairs.builder=majority_vs_minority", "engine.name=hf"]
    )
    assert method_stages(by_method) == method_stages(by_keys) == STAGES
    assert policy_stage(by_method) == "train" and dag(by_method) == dag(by_keys)
    for stage in STAGES:  # same keys, so the same fingerprints: identical outputs
        assert stage_config(by_method, stage) == stage_config(by_keys, stage), stage


def test_a_method_must_be_a_dag_closed_under_its_inputs():
    with pytest.raises(ValueError, match="score reads sample, which is not one of its stages"):
        Method("m", ("questions", "score", "pairs", "train", "evaluate"), "train").check()
    with pytest.raises(ValueError, match="pairs reads score, so it must come after it"):
        Method("m", ("questions", "sample", "pairs", "score", "train", "evaluate"), "train").check()
    with pytest.raises(ValueError, match="policy stage train is not one of its stages"):
        Method("m", ("questions",), "train").check()
    assert METHODS.names() == ["core_po", "sc_po"]


def test_ready_starts_independent_stages_together():
    graph = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    assert ready(graph, set(), set()) == ["a"]
    assert ready(graph, {"a"}, {"a"}) == ["b", "c"]  # b and c read only a: both start
    assert ready(graph, {"a", "b"}, {"a", "b", "c"}) == []  # d waits for c
    assert ready(graph, {"a", "b", "c"}, {"a", "b", "c"}) == ["d"]
