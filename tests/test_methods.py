"""Methods as DAGs of stage kinds: the registry, checks of a method's DAG, its config defaults, and that
CORE-PO and SC-PO are the same stages with the same fingerprints as the config they stand for."""

from __future__ import annotations

from pathlib import Path

import pytest

from selftrain.config import ConfigError
from selftrain.methods import METHODS, PREFERENCE_STAGES, Method
from selftrain.plan import dag, method_stages, policy_stage, ready, stage_config
from selftrain.recipes import load_config


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
    assert method_stages(by_method) == method_stages(by_keys) == PREFERENCE_STAGES
    assert policy_stage(by_method) == "train" and dag(by_method) == dag(by_keys)
    for stage in PREFERENCE_STAGES:  # same keys, so the same fingerprints: identical outputs
        assert stage_config(by_method, stage) == stage_config(by_keys, stage), stage


def test_a_method_must_be_a_dag_closed_under_its_inputs():
    with pytest.raises(ValueError, match="score reads sample, which is not one of its stages"):
        Method("m", ("questions", "score", "pairs", "train", "evaluate"), "train").check()
    with pytest.raises(ValueError, match="pairs reads score, so it must come after it"):
        Method("m", ("questions", "sample", "pairs", "score", "train", "evaluate"), "train").check()
    with pytest.raises(ValueError, match="policy stage train is not one of its stages"):
        Method("m", ("questions",), "train").check()
    assert sorted(METHODS.names()) == [
        "core_po",
        "gsi",
        "sc_po",
        "self_rewarding",
        "self_rewarding_instruct",
        "stasc",
        "w2s",
    ]


def test_ready_starts_independent_stages_together():
    graph = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    assert ready(graph, set(), set()) == ["a"]
    assert ready(graph, {"a"}, {"a"}) == ["b", "c"]  # b and c read only a: both start
    assert ready(graph, {"a", "b"}, {"a", "b", "c"}) == []  # d waits for c
    assert ready(graph, {"a", "b", "c"}, {"a", "b", "c"}) == ["d"]


def test_stasc_reward_filter_and_correction_metrics():
    from selftrain.methods.stasc.core import correction_metrics, in_acc, kept, reward, transitions

    assert in_acc("So the answer is The Eiffel Tower.", "eiffel tower") and not in_acc(
        "Paris", "eiffel tower"
    )
    q = {"task": "arithmetic", "reference": "12", "choices": None}
    assert reward("exact_match", q, "3*4 #### 12") == 1.0 and reward("exact_match", q, "#### 112") == 0.0
    assert reward("in_acc", q, "#### 112") == 1.0  # in_acc: the gold appears in the text (why tiny uses EM)
    assert kept(0.0, 1.0, only_better=True) and not kept(1.0, 1.0, only_better=True)
    assert kept(1.0, 1.0, only_better=False) and not kept(1.0, 0.0, only_better=False)
    assert transitions([(0, 1), (1, 0), (1, 1), (0, 0), (0, 1)]) == {
        "wrong_to_right": 2,
        "right_to_wrong": 1,
        "right_to_right": 1,
        "wrong_to_wrong": 1,
    }
    rows = [
        {"model": "policy", "source": "s", "initial_correct": False, "correct": True},
        {"model": "policy", "source": "s", "initial_correct": True, "correct": False},
        {"model": "policy", "source": "s", "initial_correct": True, "correct": True},
        {"model": "policy", "source": "s", "initial_correct": False, "correct": False},
    ]
    cell = correction_metrics(rows)["policy"]["s"]
    assert cell == {
        "n": 4,
        "correct": 2,
        "accuracy": 0.5,
        "initial_correct": 2,
        "initial_accuracy": 0.5,
        "wrong_to_right": 0.25,
        "right_to_wrong": 0.25,
    }


def test_stasc_recipe_and_dag():
    from selftrain.recipes import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny-stasc.yaml")
    assert cfg.method == "stasc" and policy_stage(cfg) == "sft"
    assert dag(cfg) == {
        "questions": [],
        "initial": ["questions"],
        "correct": ["questions", "initial"],
        "filter": ["questions", "correct"],
        "sft": ["filter"],
        "evaluate_correction": ["sft"],
    }
    from selftrain.plan import upstream_of

    # corrections come from the current policy; initial answers from M0 unless initial_answer_with_new_model
    assert upstream_of(cfg, 1, "correct") == [(1, "questions"), (1, "initial"), (0, "sft")]
    assert upstream_of(cfg, 1, "initial") == [(1, "questions")]
    newest = load_config(
        None, ["method=stasc", "stasc.initial_answer_with_new_model=true", "sft.train_from=base"]
    )
    assert upstream_of(newest, 1, "initial") == [(1, "questions"), (0, "sft")]
    assert upstream_of(newest, 1, "sft") == [(1, "filter")]
    paper = load_config(Path(__file__).resolve().parents[1] / "configs" / "qwen2.5-1.5b-stasc.yaml")
    assert (paper.training.learning_rate, paper.run.iterations, paper.sft.train_from) == (1e-5, 10, "base")


ROOT = Path(__file__).resolve().parents[1]
# the package each method's own stage code lives in (sc_po and the instruct variant share their family's)
PACKAGE = {
    "core_po": "core_po",
    "sc_po": "core_po",
    "self_rewarding": "self_rewarding",
    "self_rewarding_instruct": "self_rewarding",
    "stasc": "stasc",
    "gsi": "gsi",
    "w2s": "w2s",
}


def test_each_method_is_one_package_over_the_shared_core_stages():
    from selftrain.spec import kind

    assert set(PACKAGE) == set(METHODS.names()), "a new method needs its package here"
    for name in METHODS.names():
        assert (ROOT / "selftrain" / "methods" / PACKAGE[name] / "__init__.py").is_file(), name
        for stage in METHODS.get(name).stages:
            module = kind(stage).module
            assert module.startswith(("selftrain.stages.", f"selftrain.methods.{PACKAGE[name]}.")), (
                name,
                stage,
                module,
            )
    stage_files = sorted(p.name for p in (ROOT / "selftrain" / "stages").glob("*.py"))
    assert len(stage_files) <= 14, stage_files


def test_no_alias_modules():
    """A kind names the module that runs it: no module that only re-exports another's names."""
    import ast

    for path in [
        *(ROOT / "selftrain" / "stages").glob("*.py"),
        *(ROOT / "selftrain" / "methods").rglob("*.py"),
    ]:
        body = [n for n in ast.parse(path.read_text()).body if not isinstance(n, ast.Expr)]  # docstring
        if path.name == "__init__.py" or not body:
            continue
        only_names = all(
            isinstance(n, ast.ImportFrom | ast.Import)
            or (isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in n.targets))
            for n in body
        )
        assert not only_names, f"{path.relative_to(ROOT)} only re-exports: name the real module in the spec"
