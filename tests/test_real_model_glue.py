"""Glue a real model needs and the tiny model hid: vLLM's chunked prefill on CPUs, CORE-PO's parse-rate guard,
the one-shot demonstration, and evaluation skipping a policy that training left unchanged."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from selftrain.config import Config, ConfigError
from selftrain.prompts import DEMO_ANSWER, DEMO_QUESTION, PromptBuilder
from selftrain.stages.score import check_judgment_rate, check_parse_rate
from selftrain.store import MANIFEST
from tests.conftest import cli, tiny_recipe, write_recipe


class _ChatTok:
    """A stand-in chat tokenizer: renders messages as `[role] content` lines (never called to encode)."""

    chat_template = "stub"
    bos_token = None

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(f"[{m['role']}] {m['content']}\n" for m in messages) + "[assistant] "


def test_chunked_prefill_off_on_cpu_and_refused_there():
    pytest.importorskip("vllm")
    from selftrain.engines.vllm_engine import prefill_kwargs

    cfg = Config.model_validate({"engine": {"max_model_len": 4096}})
    assert prefill_kwargs(cfg, on_cpu=True) == {
        "enable_chunked_prefill": False,
        "max_num_batched_tokens": 4096,
    }
    assert prefill_kwargs(cfg, on_cpu=False) == {}  # vLLM's own choice on GPUs
    off = Config.model_validate({"engine": {"chunked_prefill": "off"}})
    assert prefill_kwargs(off, on_cpu=False) == {"enable_chunked_prefill": False}
    on = Config.model_validate({"engine": {"chunked_prefill": "on"}})
    with pytest.raises(ConfigError, match="engine.chunked_prefill"):
        prefill_kwargs(on, on_cpu=True)
    assert prefill_kwargs(on, on_cpu=False) == {"enable_chunked_prefill": True}


def test_vllm_cpu_worker_is_bound_to_every_core_it_may_use(monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("vllm")
    from selftrain.engines import vllm_engine
    from selftrain.engines.vllm_engine import cpu_binding_env

    monkeypatch.setattr(vllm_engine.os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3}, raising=False)
    both = {"VLLM_CPU_OMP_THREADS_BIND": "0,1,2,3", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    assert cpu_binding_env(True, environ={}) == both
    assert cpu_binding_env(True, threads=2, environ={})["VLLM_CPU_OMP_THREADS_BIND"] == "0,1"
    assert cpu_binding_env(True, environ={"OMP_NUM_THREADS": "3"})["VLLM_CPU_OMP_THREADS_BIND"] == "0,1,2"
    # one thread asked for (the test suite's setting), the user's own binding, the GPU build: vLLM decides
    assert cpu_binding_env(True, environ={"OMP_NUM_THREADS": "1"}) == {}
    assert cpu_binding_env(True, environ={"VLLM_CPU_OMP_THREADS_BIND": "nobind"}) == {}
    assert cpu_binding_env(True, environ={"VLLM_CPU_NUM_OF_RESERVED_CPU": "1"}) == {}
    assert cpu_binding_env(False, environ={}) == {}


def test_vllm_cpu_engine_runs_eager_and_serves_a_merged_policy_where_set_to_auto():
    pytest.importorskip("vllm")
    from selftrain.engines.vllm_engine import compile_kwargs, serve_merged

    auto = Config.model_validate({})
    assert compile_kwargs(auto, on_cpu=True) == {"enforce_eager": True}
    assert compile_kwargs(auto, on_cpu=False) == {}  # CUDA graphs and compile pay off on GPUs
    assert serve_merged(auto, on_cpu=True) and not serve_merged(auto, on_cpu=False)
    forced = Config.model_validate({"engine": {"compile": "on", "lora": "request"}})
    assert compile_kwargs(forced, on_cpu=True) == {} and not serve_merged(forced, on_cpu=True)
    gpu_off = Config.model_validate({"engine": {"compile": "off", "lora": "merged"}})
    assert compile_kwargs(gpu_off, on_cpu=False) == {"enforce_eager": True} and serve_merged(gpu_off, False)
    with pytest.raises(ValidationError, match="lora"):
        Config.model_validate({"engine": {"lora": "merge"}})


def test_a_bare_on_or_off_reads_as_the_switch_not_a_yaml_boolean():
    from selftrain.recipes import load_config
    from tests.conftest import ROOT

    cfg = load_config(ROOT / "configs" / "smollm2-demo.yaml", ["engine.in_process=on", "engine.compile=off"])
    assert (cfg.engine.in_process, cfg.engine.compile) == ("on", "off")
    with pytest.raises(ConfigError, match="engine.chunked_prefill"):
        load_config(ROOT / "configs" / "smollm2-demo.yaml", ["engine.chunked_prefill=1"])


def test_vllm_cpu_engine_runs_in_the_stage_process_only_where_one_device_and_not_chosen_otherwise():
    pytest.importorskip("vllm")
    from selftrain.engines.vllm_engine import in_process_kwargs

    auto = Config.model_validate({})
    env: dict[str, str] = {}
    assert in_process_kwargs(auto, on_cpu=True, environ=env) == {"distributed_executor_backend": "uni"}
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # read by vLLM when LLM() builds its engine core
    # a stage process that inherited what an earlier engine set still gets the uni executor
    assert in_process_kwargs(auto, on_cpu=True, environ=dict(env)) == {"distributed_executor_backend": "uni"}
    assert in_process_kwargs(auto, on_cpu=False, environ={}) == {}  # GPUs keep vLLM's processes
    user_set = {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    assert (
        in_process_kwargs(auto, on_cpu=True, environ=user_set) == {}
        and user_set["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1"
    )
    off = Config.model_validate({"engine": {"in_process": "off"}})
    assert in_process_kwargs(off, on_cpu=True, environ={}) == {}
    mp = Config.model_validate({"engine": {"distributed_executor_backend": "mp"}})
    assert in_process_kwargs(mp, on_cpu=True, environ={}) == {}  # the user's executor wins under auto
    on = Config.model_validate({"engine": {"in_process": "on"}})
    assert in_process_kwargs(on, on_cpu=False, environ={}) == {"distributed_executor_backend": "uni"}
    with pytest.raises(ValidationError, match="engine.in_process"):
        Config.model_validate({"engine": {"in_process": "on", "tensor_parallel_size": 2}})


def _samples(completions: list[str]) -> list[dict]:
    return [
        {"completion": c, "finish_reason": "stop", "answer": "7" if "7" in c else None} for c in completions
    ]


FORMATTED = (
    "**Understanding the question:** x\n\n**Reasoning:** 3 + 4 = 7.\n\n**Final answer:** The answer is $7$"
)


def test_core_po_parse_rate_guard_names_the_field():
    cfg = Config.model_validate(
        {"judge": {"name": "core_po", "min_parse_rate": 0.05}, "prompt": {"template": "core_po"}}
    )
    # the model answers in its own words: nothing parses, and the stage stops before loading a model
    with pytest.raises(ConfigError, match=r"judge.min_parse_rate: only 0 of 4 samples parse.*one_shot"):
        check_parse_rate(cfg, _samples(["The answer is 7."] * 4))
    assert check_parse_rate(cfg, _samples([FORMATTED] * 3 + ["7"])) == 0.75
    # 0 (the default) = only warn
    lenient = Config.model_validate({"judge": {"name": "core_po"}})
    assert check_parse_rate(lenient, _samples(["The answer is 7."] * 4)) == 0.0
    # model-free judges count samples with an extracted answer
    sc = Config.model_validate({"judge": {"name": "self_consistency"}})
    assert check_parse_rate(sc, _samples(["The answer is 7.", "no idea"])) == 0.5


def test_llm_as_judge_judgment_rate_guard_names_the_field():
    # SmolLM2 under the paper's rubric: 1 of 192 judgments had a `Score: N` (docs/real-model.md)
    stats = {"scored": 64, "judgments": 192, "unparsable_rate": round(191 / 192, 6), "unscored_samples": 63}
    strict = Config.model_validate({"judge": {"name": "llm_as_judge", "min_parse_rate": 0.05}})
    with pytest.raises(ConfigError, match=r"judge.min_parse_rate: only 1 of 192 judgments .*Score: N"):
        check_judgment_rate(strict, stats)
    check_judgment_rate(strict, {**stats, "unparsable_rate": 0.9})  # 10 % read: above 5 %, passes
    check_judgment_rate(Config.model_validate({"judge": {"name": "llm_as_judge"}}), stats)  # 0: only warns
    check_judgment_rate(strict, {"scored": 4})  # judges that write no judgments: nothing to check


def test_one_shot_puts_one_worked_exchange_before_the_question_only():
    b = PromptBuilder(_ChatTok(), "core_po", "Be a helpful assistant.", one_shot=True)
    q = b.question("What is 2 + 2?")
    assert q.count("[user]") == 2 and q.index(DEMO_QUESTION) < q.index("What is 2 + 2?")
    assert f"[assistant] {DEMO_ANSWER}\n" in q
    # the demonstration follows the format the parser reads
    assert b.parse(DEMO_ANSWER).ok and b.parse(DEMO_ANSWER).answer.strip() == "The answer is $7$"
    # judge prompts are CORE-PO's, unchanged
    assert DEMO_QUESTION not in b.answer_judge("What is 2 + 2?", "2 + 2 = 4.", "4")
    assert PromptBuilder(_ChatTok(), "core_po").question("Q?").count("[user]") == 1
    # chat: the bare question, no format instructions
    assert PromptBuilder(_ChatTok(), "chat", "S").question("Q?") == "[system] S\n[user] Q?\n[assistant] "


@pytest.mark.slow
def test_evaluate_copies_the_base_rows_when_training_trained_nothing(tmp_path, tiny_model):
    # no pair clears the margin: the train stage keeps the policy, and evaluate does not generate it again
    recipe = tiny_recipe(tmp_path, tiny_model, pairs={"builder": "best_vs_rest", "min_margin": 5.0})
    proc = cli("run", str(write_recipe(tmp_path / "r.yaml", recipe)), "--no-prefect")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trained nothing: the policy's rows are the base model's" in proc.stderr
    run_dir = tmp_path / "runs" / recipe["run"]["name"]
    train = json.loads((run_dir / "iter-000" / "train" / MANIFEST).read_text())["stats"]
    assert train["trained"] is False
    from selftrain.store import RunStore, read_stage

    rows = read_stage(RunStore(run_dir).stage_dir(0, "evaluate")).to_pylist()
    base = [{**r, "model": "-"} for r in rows if r["model"] == "base"]
    policy = [{**r, "model": "-"} for r in rows if r["model"] == "policy"]
    assert base and policy == base


@pytest.mark.slow
def test_demo_recipe_reads_no_label_to_train(tmp_path, tiny_model):
    """The demo's judge, pair rule and trainer (configs/smollm2-demo.yaml) on the tiny model: the same questions
    with their references scrambled give the same samples, scores, training rows and adapter."""
    import random

    import yaml

    from selftrain.config import SourceConfig
    from selftrain.data.sources import load_source
    from tests.conftest import ROOT, adapter_weights, stage_tables

    demo = yaml.safe_load((ROOT / "configs" / "smollm2-demo.yaml").read_text())
    rows = load_source(SourceConfig(name="synthetic_arithmetic", split="train", size=8), 0)
    wrong = [str(int(r["reference"]) + random.Random(i).randint(1, 9)) for i, r in enumerate(rows)]
    runs = {}
    for name, refs in (("true", [r["reference"] for r in rows]), ("scrambled", wrong)):
        root = tmp_path / name
        root.mkdir()
        path = root / "q.jsonl"
        path.write_text(
            "".join(json.dumps({"q": r["question"], "a": a}) + "\n" for r, a in zip(rows, refs, strict=True))
        )
        source = {"name": "file", "path": str(path), "question_field": "q", "reference_field": "a"}
        recipe = tiny_recipe(
            root,
            tiny_model,
            data={"train": [{**source, "task": "numeric"}], "questions_per_iteration": 8, "shard_size": 4},
            judge=demo["judge"],
            pairs=demo["pairs"],
            training={"loss": demo["training"]["loss"], "learning_rate": 1e-3, "max_steps": 2},
            sampling={"n": 6, "temperature": 0.3},  # the weak test model agrees with itself at low T
        )
        proc = cli("run", str(write_recipe(root / "r.yaml", recipe)), "--no-prefect")
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = root / "runs" / recipe["run"]["name"]
    tables = ["sample", "score", "pairs"]
    assert stage_tables(runs["true"], 0, tables) == stage_tables(runs["scrambled"], 0, tables)
    assert stage_tables(runs["true"], 0, ["pairs"])["pairs"], "no training rows: the comparison shows nothing"
    a, b = adapter_weights(runs["true"]), adapter_weights(runs["scrambled"])
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
