"""Reading koneox configs: YAML file, dotted command-line overrides, typed dataclass building.

The one loader and builder every stage uses. ``train.config.load_config`` builds the whole
``Config`` with it; a stage that needs only its own section (``koneox clean`` reads
``data.clean``) calls ``load_section``, which never imports the model or torch:

    raw, source, origins = read_config("tiny.yaml", ["data.clean.filter.min_chars=5"])
    cfg = load_section(CleanConfig, "data.clean", "tiny.yaml", ["data.clean.filter.min_chars=5"])

Every error is a ``ConfigError`` whose message starts with where the value came from (the
file, or "command line") and the dotted key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem; the message starts with the file (or 'command line') and key."""


def resolve_config_path(path: str | Path) -> Path:
    """The path as given, else ``configs/<path>`` (with or without .yaml) in the repository."""
    p = Path(path)
    for candidate in (p, CONFIG_DIR / p, CONFIG_DIR / f"{p}.yaml"):
        if candidate.is_file():
            return candidate
    known = ", ".join(sorted(f.name for f in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"{path}: config file not found (looked here and in {CONFIG_DIR}; known: {known})")


def read_config(
    path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[dict[str, Any], str, dict[str, str]]:
    """The YAML file's mapping with the ``key=value`` overrides applied, untyped.

    Returns ``(raw, source, origins)``: ``source`` names the file ("defaults" without one),
    ``origins`` maps each overridden dotted key to "command line", for ``build`` and ``source_of``.
    """
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        file = resolve_config_path(path)
        source = str(file)
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{file}: invalid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file}: top level must be a mapping of sections, got {type(loaded).__name__}")
        raw = loaded
    origins: dict[str, str] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip().removeprefix("--")
        if not sep or not key:
            raise ConfigError(f"command line: {item!r}: overrides are written key=value, e.g. train.lr=1e-4")
        _set_dotted(raw, key, yaml.safe_load(value) if value.strip() else "")
        origins[key] = "command line"
    return raw, source, origins


def load_section(
    cls: type[T], section: str, path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()
) -> T:
    """Build only the dotted ``section`` (e.g. ``data.clean``) of a config as ``cls``.

    The rest of the file is not read, so a stage need not import the other sections' code;
    an override outside the section is refused rather than silently dropped.
    """
    raw, source, origins = read_config(path, overrides)
    for key in origins:
        if not (f"{key}.".startswith(f"{section}.") or section.startswith(f"{key}.")):
            raise ConfigError(f"command line: {key}: outside {section}, the only section this stage reads")
    node: Any = raw
    prefix = ""
    for part in section.split("."):
        _require_mapping(node, prefix, source, origins)
        prefix += f"{part}."
        node = node.get(part, {})
    return build(cls, node, prefix, source, origins)


def source_of(origins: dict[str, str], key: str, source: str) -> str:
    """Where ``key`` was set: "command line" when it, or any section above it, was overridden."""
    parts = key.split(".")
    for i in range(len(parts), 0, -1):
        hit = origins.get(".".join(parts[:i]))
        if hit:
            return hit
    return source


def build(cls: type[T], raw: Any, prefix: str, source: str, origins: dict[str, str]) -> T:
    """Dataclass ``cls`` from its defaults with the mapping ``raw`` applied, every value type-checked.

    ``prefix`` is the dotted path of ``raw`` with a trailing dot ("" for the top level,
    "data.clean." for a section); it and ``source``/``origins`` name the key in every error.
    """
    _require_mapping(raw, prefix, source, origins)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    obj = cls()
    for key, value in raw.items():
        dotted = prefix + str(key)
        if key not in names:
            hint = difflib.get_close_matches(str(key), names, n=1)
            suggestion = f" (did you mean {prefix}{hint[0]}?)" if hint else ""
            raise ConfigError(f"{source_of(origins, dotted, source)}: {dotted}: unknown key{suggestion}; "
                              f"valid keys here: {', '.join(names)}")
        setattr(obj, key, _convert(hints[key], value, dotted, source, origins))
    return obj


def _require_mapping(raw: Any, prefix: str, source: str, origins: dict[str, str]) -> None:
    if not isinstance(raw, dict):
        key = prefix.rstrip(".")
        raise ConfigError(f"{source_of(origins, key, source)}: {key or 'top level'}: expected a mapping, "
                          f"got {type(raw).__name__} {raw!r}")


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        nxt = d.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"command line: {key}: {part} is not a section")
        d = nxt
    d[parts[-1]] = value


def _describe(tp: Any) -> str:
    """How an error names a type: 'a number', "'auto'", 'null' ..."""
    if typing.get_origin(tp) is Literal:
        return " or ".join(map(repr, typing.get_args(tp)))
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _convert(tp: Any, value: Any, key: str, source: str, origins: dict[str, str]) -> Any:
    where = source_of(origins, key, source)

    def wrong(expected: str) -> typing.NoReturn:
        raise ConfigError(f"{where}: {key}: expected {expected}, got {type(value).__name__} {value!r}")

    if dataclasses.is_dataclass(tp):
        return build(tp, value, key + ".", source, origins)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(inner[0], value, key, source, origins)
        for option in inner:  # the first type that takes the value, e.g. float | Literal["auto"]
            try:
                return _convert(option, value, key, source, origins)
            except ConfigError:
                continue
        wrong(" or ".join(_describe(a) for a in args))
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {key}: must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            wrong("a list")
        return [_convert(args[0], v, f"{key}[{i}]", source, origins) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            wrong("a mapping")
        return {str(k): _convert(args[1], v, f"{key}.{k}", source, origins) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            wrong("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            wrong("an integer")
        return value
    if tp is float:
        # YAML reads "1e-4" (no dot) as a string; accept numeric strings for floats only.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                wrong("a number")
        if isinstance(value, bool) or not isinstance(value, int | float):
            wrong("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            wrong("a string")
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{where}: {key}: unsupported field type {tp!r}")
