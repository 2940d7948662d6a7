"""The stage spec and what derives from it, without running a stage: upstream links, fingerprints (unchanged by
the stage-spec refactor), staleness, folders of older layouts, and the code layout (no import cycle)."""

from __future__ import annotations

import ast
import importlib
import uuid
from pathlib import Path

import pytest

from selftrain.config import Config
from selftrain.methods import PREFERENCE_STAGES
from selftrain.plan import dag, downstream_of, expected, stage_config, stage_state, upstream_of
from selftrain.spec import KINDS, POLICY, QUESTIONS, Runs, kind
from selftrain.store import Manifest, RunStore, StageWriter, write_manifest

ROOT = Path(__file__).resolve().parents[1]
HF = {"engine": {"name": "hf"}}


def _cfg(**sections) -> Config:
    return Config.model_validate({**HF, **sections})


def _complete(cfg: Config, store: RunStore, iteration: int, stage: str) -> Manifest:
    """Mark a stage complete as a real run would (its fingerprint from the plan), without running it."""
    exp = expected(cfg, store, iteration, stage)
    assert exp is not None, f"{stage}: upstream not complete"
    fp, conf, upstream = exp
    writer = StageWriter(store.stage_dir(iteration, stage), fp)
    m = Manifest(
        stage=stage,
        iteration=iteration,
        fingerprint=fp,
        output_id=uuid.uuid4().hex[:16],
        config=conf,
        upstream=upstream,
    )
    write_manifest(writer.dir, m)
    return m


def test_every_kind_is_declared_consistently():
    cfg = Config()
    for spec in KINDS.values():
        for key in spec.keys:
            cfg.section(key)  # every key a stage reads exists in the config
        for needed in spec.inputs:
            assert needed.stage in (POLICY, QUESTIONS) or needed.stage in KINDS, (spec.name, needed)
        module = importlib.import_module(spec.module)  # each kind names a module that runs it
        assert callable(module.run), spec.name
        if spec.runs == Runs.TRAINER:
            assert callable(module.train_or_keep), spec.name
    with pytest.raises(KeyError, match="did you mean 'sample'"):
        kind("samples")


def test_upstream_links():
    cfg = _cfg()
    assert upstream_of(cfg, 0, "questions") == []
    assert upstream_of(cfg, 0, "sample") == [(0, "questions")]
    assert upstream_of(cfg, 1, "sample") == [(1, "questions"), (0, "train")]
    assert upstream_of(cfg, 1, "score") == [(1, "sample"), (0, "train")]
    assert upstream_of(cfg, 1, "pairs") == [(1, "score"), (1, "sample")]
    assert upstream_of(cfg, 1, "train") == [(1, "pairs"), (0, "train")]
    assert upstream_of(cfg, 1, "evaluate") == [(1, "train")]
    fresh = _cfg(training={"init": "base"})
    assert upstream_of(fresh, 1, "train") == [(1, "pairs")]
    assert downstream_of(cfg, "score") == ["score", "pairs", "train", "evaluate"]
    assert downstream_of(cfg, "questions") == list(PREFERENCE_STAGES)
    assert dag(cfg) == {
        "questions": [],
        "sample": ["questions"],
        "score": ["sample"],
        "pairs": ["score", "sample"],
        "train": ["pairs"],
        "evaluate": ["train"],
    }


# Fingerprints computed by the code before the stage spec (55e3d3e's pipeline.py): a run written then must stay
# complete, so these must not change. (upstream output ids: "id-<iteration>-<stage>")
BEFORE_SPEC = {
    ("default", 1, "questions"): "ea560aa3def6ca72",
    ("default", 1, "sample"): "a8ab79075bae297b",
    ("default", 1, "score"): "054019a26c723903",
    ("default", 1, "pairs"): "45692e407d32f647",
    ("default", 1, "train"): "fd10d0f89224638b",
    ("default", 1, "evaluate"): "389be5ca146d6e66",
    ("default", 0, "train"): "d143c4e22657617c",
    ("base_init", 1, "train"): "5af9c282b81d909c",
    ("sc", 1, "score"): "9cc6e018fc2c529b",
    ("sc", 0, "evaluate"): "3363efeec8dd00aa",
}
CONFIGS = {
    "default": {},
    "base_init": {"training": {"init": "base", "loss": "sft"}, "pairs": {"builder": "chosen_only"}},
    "sc": {"judge": {"name": "self_consistency"}, "pairs": {"builder": "majority_vs_minority"}},
}


@pytest.mark.parametrize("case", sorted(BEFORE_SPEC))
def test_fingerprints_unchanged_by_the_stage_spec(case):
    from selftrain.store import fingerprint

    name, iteration, stage = case
    cfg = _cfg(**CONFIGS[name])
    upstream = {f"iter-{i:03d}/{s}": f"id-{i}-{s}" for i, s in upstream_of(cfg, iteration, stage)}
    assert fingerprint(stage, stage_config(cfg, stage), upstream) == BEFORE_SPEC[case]


def test_ignored_keys_do_not_change_a_fingerprint():
    base = stage_config(_cfg(), "train")
    assert stage_config(_cfg(training={"logging_steps": 99, "save_steps": 7}), "train") == base
    assert "training.learning_rate" in base and "training.logging_steps" not in base


def test_state_done_stale_blocked_and_upstream_rebuilt(tmp_path):
    cfg = _cfg()
    store = RunStore(tmp_path / "run")
    assert stage_state(cfg, store, 0, "sample").status == "blocked"
    assert stage_state(cfg, store, 0, "questions").status == "missing"
    for stage in ("questions", "sample", "score"):
        _complete(cfg, store, 0, stage)
    assert stage_state(cfg, store, 0, "score").status == "done"
    assert stage_state(cfg, store, 0, "pairs").status == "missing"
    hotter = _cfg(sampling={"temperature": 0.5})
    state = stage_state(hotter, store, 0, "sample")
    assert state.status == "stale" and state.reasons == ["sampling.temperature: 1.0 -> 0.5"]
    assert stage_state(hotter, store, 0, "score").status == "done"  # score reads no sampling key...
    _complete(hotter, store, 0, "sample")  # ...until its input is rebuilt
    state = stage_state(hotter, store, 0, "score")
    assert state.status == "stale" and state.reasons == ["upstream iter-000/sample was rebuilt"]


def test_old_folder_names_are_read_where_they_exist(tmp_path):
    from selftrain.store import LEGACY_FOLDERS

    cfg = _cfg()
    store = RunStore(tmp_path / "run")
    _complete(cfg, store, 0, "questions")
    _complete(cfg, store, 0, "sample")
    (store.iter_dir(0) / "sample").rename(store.iter_dir(0) / LEGACY_FOLDERS["sample"])
    assert store.stage_dir(0, "sample").name == "samples"
    assert stage_state(cfg, store, 0, "sample").status == "done"
    _complete(cfg, store, 0, "score")  # new output goes under the stage's name
    assert (store.iter_dir(0) / "score").is_dir() and stage_state(cfg, store, 0, "score").status == "done"


def _runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """The first-party modules `path` imports when it runs (module or function level; TYPE_CHECKING
    blocks excluded: they never run)."""
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if "TYPE_CHECKING" in ast.unparse(node.test):
                for child in node.orelse:
                    self.visit(child)
            else:
                self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(a.name for a in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.module and not node.level:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)

    Visitor().visit(ast.parse(path.read_text()))
    out = set()
    for name in found:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            out.add(name)
    return out


def test_no_import_cycle_and_no_long_module():
    files = {}
    for package in ("selftrain", "flows", "tasks"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {m: _runtime_imports(p, set(files)) - {m} for m, p in files.items()}
    long = {m: n for m, p in files.items() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"
    # depth-first search for a back edge
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(d) :], d]))
            if d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_a_stage_computes_its_expected_inputs_once(tmp_path, monkeypatch):
    """`expected` (fingerprint, config keys, upstream ids) reads every upstream manifest: execute_stage computes
    it once (in stage_state) and hands it down to open_stage, instead of once in each."""
    import selftrain.plan
    import selftrain.stages
    from selftrain.pipeline import execute_stage
    from tests.conftest import questions_only

    cfg, store = questions_only(tmp_path)
    calls = []

    def counting(*args):  # noqa: ANN002, ANN202
        calls.append(args[3])
        return expected(*args)

    monkeypatch.setattr(selftrain.plan, "expected", counting)
    monkeypatch.setattr(selftrain.stages, "expected", counting)
    manifest = execute_stage(cfg, store, 0, "questions")
    assert calls == ["questions"]
    assert manifest.fingerprint == expected(cfg, store, 0, "questions")[0]
