"""Parsing a recipe: defaults < YAML recipe < `--set key=value` overrides. Unknown keys are errors that name the
closest valid key; validation errors name the field and the offending value. Also `flatten`, the dotted view
of a config that fingerprints read.

This layer knows no registry: the method's defaults and the check that every named part exists come in as
hooks from selftrain.recipes (the one `load_config` callers use), so config imports no method, judge or source.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from selftrain.config.base import ConfigError
from selftrain.config.recipe import Config
from selftrain.faults import read_text_utf8
from selftrain.registry import UnknownNameError, did_you_mean

# A method's defaults, by method name: {dotted key: value} set where the recipe chose no value.
Defaults = Callable[[str], dict[str, Any]]
# Raises UnknownNameError for a registered part the config names that does not exist.
Check = Callable[[Config], None]


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists of dicts are indexed (data.train.0.name)."""
    out: dict[str, Any] = {}
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    if isinstance(data, list):
        data = [x.model_dump(mode="json") if isinstance(x, BaseModel) else x for x in data]
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
        for i, v in enumerate(data):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = data
    return out


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[int(part)]
            continue
        if part not in node or node[part] is None:
            node[part] = [] if parts[i + 1].isdigit() else {}
        node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def _valid_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        ann = field.annotation
        for sub in getattr(ann, "__args__", ()) or (ann,):
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                keys.extend(_valid_keys(sub, f"{prefix}{name}."))
            for inner in getattr(sub, "__args__", ()):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    keys.extend(_valid_keys(inner, f"{prefix}{name}.N."))
    return keys


def _format_error(err: ValidationError, origin: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        generic = ".".join("N" if str(p).isdigit() else str(p) for p in first["loc"])
        hint = did_you_mean(generic, _valid_keys())
        hint = hint.replace(".N.", ".<i>.") if "did you mean" in hint else ""
        return f"{origin}: unknown config key '{loc}'{hint}"
    value = first.get("input")
    msg = first["msg"]
    if first["type"] in ("value_error", "assertion_error"):
        msg = msg.removeprefix("Value error, ")
        return f"{origin}: {loc}: {msg}"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{origin}: invalid value for '{loc}': {value!r} ({msg}){more}"


def build_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    defaults: Defaults | None = None,
    check: Check | None = None,
) -> Config:
    """Build a Config from defaults, an optional YAML recipe, and `key=value` overrides; `defaults` and
    `check` are the registries' hooks (selftrain.recipes.load_config passes them)."""
    hooks = (defaults, check)
    tree: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        path = Path(path)
        origin = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(read_text_utf8(path, ConfigError))
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of sections, got {type(loaded).__name__}")
        tree = copy.deepcopy(loaded or {})
    chosen = set(flatten(tree))  # what the recipe and --set say: the method's defaults fill in the rest
    if overrides:
        # Overrides apply on top of the defaults *and* the recipe: expand the recipe first so that e.g.
        # `--set data.train.0.limit=5` can address a list item the recipe left at its default.
        base = _validate(tree, origin, None, *hooks) if tree else Config()
        merged = base.model_dump(mode="json", exclude_unset=False)
        _deep_update(merged, tree)
        tree = merged
        for text in overrides:
            key, value = parse_override(text)
            try:
                _set_dotted(tree, key, value)
            except (IndexError, ValueError, TypeError, KeyError):
                raise ConfigError(f"--set {text}: no such key '{key}'") from None
            chosen.add(key)
        origin = f"{origin} + --set"
    return _validate(tree, origin, chosen, *hooks)


def _method_defaults(tree: dict[str, Any], chosen: set[str], defaults: Defaults) -> None:
    """Set the method's defaults in `tree` where the user chose no value."""
    for key, value in defaults(str(tree.get("method") or Config.model_fields["method"].default)).items():
        if not any(c == key or c.startswith(f"{key}.") or key.startswith(f"{c}.") for c in chosen):
            _set_dotted(tree, key, value)


def _validate(
    tree: dict[str, Any],
    origin: str,
    chosen: set[str] | None = None,
    defaults: Defaults | None = None,
    check: Check | None = None,
) -> Config:
    """Every validation goes through here, so a bad recipe is a one-line error with or without --set."""
    try:
        tree = copy.deepcopy(tree)
        if defaults is not None:
            _method_defaults(tree, set(flatten(tree)) if chosen is None else chosen, defaults)
        cfg = Config.model_validate(tree)
        if check is not None:
            check(cfg)
    except ValidationError as e:
        raise ConfigError(_format_error(e, origin)) from None
    except UnknownNameError as e:
        raise ConfigError(f"{origin}: {e}") from None
    return cfg


def _deep_update(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = v


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
