"""argparse flags generated from a config dataclass's fields (their metadata: help, flag, action...).

The ``train`` CLI keeps the reference ``train.py``'s flag names: ``--num-labeled`` for
``num_labeled``, with a field's own ``flag`` where the reference differs (``--no-download``,
``--T``). Only flags the user gave reach the namespace (``argparse.SUPPRESS``), so a config
built from them keeps every other default.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Callable


def opt(default: Any, help: str, **cli: Any) -> Any:
    """A config field with its CLI flag's help (and argparse options: flag, action, choices...)."""
    return dataclasses.field(default=default, metadata={"help": help, **cli})


def _scalar(tp: Any) -> Any:
    """int for ``int | None``, float for ``float``..."""
    args = [t for t in typing.get_args(tp) if t is not type(None)]
    return args[0] if args else tp


def flag_of(f: dataclasses.Field, prefix: str = "") -> str:
    """The flag of field ``f``: its own (``--T``), else ``--[prefix-]name-with-hyphens``."""
    return f.metadata.get("flag") or "--" + (f"{prefix}-" if prefix else "") + f.name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser, cls: type, prefix: str = "", skip: set[str] | None = None,
                     note: Callable[[str], str] | None = None) -> set[str]:
    """One flag per field of ``cls`` that carries a ``help`` in its metadata, except the names in
    ``skip``; ``prefix`` goes before the flag and the destination (``--wandb-project`` →
    ``wandb.project``), ``note(name)`` after the help. Returns the destinations added."""
    hints = typing.get_type_hints(cls)
    added = set()
    for f in dataclasses.fields(cls):
        meta = f.metadata
        dest = f"{prefix}.{f.name}" if prefix else f.name
        if "help" not in meta or dest in (skip or ()):
            continue
        added.add(dest)
        kw: dict[str, Any] = {"dest": dest, "help": meta["help"] + (note(f.name) if note else "")}
        action = meta.get("action")
        if action == "bool":
            kw["action"] = argparse.BooleanOptionalAction
        elif action in ("store_true", "store_false"):
            kw["action"] = action
        else:
            kw["type"] = meta.get("type") or _scalar(hints[f.name])
            if prefix:
                kw["metavar"] = f.name.upper()
            for key in ("choices", "nargs", "const"):
                if key in meta:  # choices may be a function: registries are read when the parser is built
                    kw[key] = meta[key]() if callable(meta[key]) else meta[key]
        parser.add_argument(flag_of(f, prefix), **kw)
    return added
