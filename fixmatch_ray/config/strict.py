"""The one strict loader behind run configs, resources and sweep files.

A dataclass declares the keys and their types; :func:`from_mapping` builds it from a mapping
(YAML, a dict, the CLI), rejecting unknown keys and checking every value's type (nested
dataclasses too), so every problem is one :class:`ConfigError` line naming where it is.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from ..errors import ConfigError

T = TypeVar("T")


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def load_yaml(path: str | os.PathLike) -> Any:
    """Parse a YAML file; a missing, unreadable, binary or non-UTF-8 file or bad syntax is a
    one-line :class:`ConfigError` naming the file."""
    try:
        data = Path(path).read_bytes()
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise ConfigError(f"{path}: UTF-16 text; save the file as UTF-8")
        if b"\0" in data:
            raise ConfigError(f"{path}: binary data, not a YAML text file")
        return yaml.safe_load(data.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {str(path)!r} is a directory; expected a YAML file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                          "save the file as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"config file {str(path)!r} cannot be read ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{at}: {problem}") from None


def from_mapping(cls: type[T], data: Any, where: str, **internal: Any) -> T:
    """``cls(**data, **internal)`` for a dataclass ``cls``, strictly: unknown keys are errors,
    nested dataclass fields are built from their own mappings (or by the field type's own
    ``parse(value, where)``), ``where`` names the source; ``internal`` fills fields that are no
    keys of the mapping."""
    require(isinstance(data, Mapping), f"{where}: expected a mapping of keys to values, got {type(data).__name__}")
    fields = keys_of(cls)
    for key in data:
        require(key in fields, f"{where}: unknown key {key!r}; valid keys: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in data.items():
        nested = _dataclass_of(hints[key])
        if nested is not None and value is not None:
            parse = getattr(nested, "parse", None)
            value = parse(value, f"{where}: {key}") if parse else from_mapping(nested, value, f"{where}: {key}")
        values[key] = value
    return cls(**values, **internal)


def keys_of(cls: type) -> list[str]:
    """The mapping keys of dataclass ``cls``: its fields not marked ``internal``."""
    return [f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


@dataclasses.dataclass(frozen=True)
class Options:
    """The base of an extension's own options (an algorithm's, a tracker's): a frozen dataclass
    whose fields are its keys, each written once with its default (and, through
    :func:`.cli.opt`, its help and ``train`` flag). Types are checked as the run config's, then
    :meth:`check` judges the values; every problem is one :class:`ConfigError` line."""

    def __post_init__(self) -> None:
        check_types(self)
        self.check()

    def check(self) -> None:
        """Raise :class:`ConfigError` (:func:`require`) for a value this extension cannot use."""


def _dataclass_of(tp: Any) -> Any:
    """The dataclass a field holds: ``tp`` itself, or ``X`` of an optional ``X | None``; else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1 and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


def check_types(obj: Any, where: str = "") -> None:
    """Every field of the dataclass ``obj`` holds a value of its declared type; the error names the
    innermost bad key (``axes.lambda_u``, ``seeds[2]``)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        bad = _first_bad(getattr(obj, f.name), hints[f.name], f"{where}.{f.name}" if where else f.name)
        if bad is not None:
            path, tp, value = bad
            raise ConfigError(f"{path}: expected {type_name(tp)}, got {value!r} ({type(value).__name__})")


def _first_bad(value: Any, tp: Any, path: str) -> tuple[str, Any, Any] | None:
    """Where ``value`` first differs from ``tp``: (path, expected type, value there), or None."""
    if is_instance(value, tp):
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, tuple) and args and isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            if not is_instance(v, args[0]):
                return _first_bad(v, args[0], f"{path}[{i}]")
    if origin is dict and args and isinstance(value, dict):
        for k, v in value.items():
            if not is_instance(v, args[1]):
                return _first_bad(v, args[1], f"{path}.{k}")
    return path, tp, value


def is_instance(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(is_instance(value, t) for t in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:  # an int is a fine float; a bool is not a number here
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp) or (Any,)
        return isinstance(value, (list, tuple)) and all(is_instance(v, inner) for v in value)
    if origin is dict or tp is dict:
        k, v = typing.get_args(tp) or (Any, Any)
        return isinstance(value, dict) and all(is_instance(a, k) and is_instance(b, v) for a, b in value.items())
    if tp is Any:
        return True
    if dataclasses.is_dataclass(tp):
        return isinstance(value, tp)
    return isinstance(value, tp)


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(t) for t in typing.get_args(tp))
    if origin in (list, tuple):
        inner = (typing.get_args(tp) or (Any,))[0]
        return "a list" if inner is Any else f"a list of {type_name(inner)}"
    if origin is dict:
        k, v = typing.get_args(tp)
        return f"a mapping of {type_name(k)} to {type_name(v)}"
    return "null" if tp is type(None) else "any" if tp is Any else getattr(tp, "__name__", str(tp))
