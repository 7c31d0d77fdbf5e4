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
from typing import Any


def _scalar(tp: Any) -> Any:
    """int for ``int | None``, float for ``float``..."""
    args = [t for t in typing.get_args(tp) if t is not type(None)]
    return args[0] if args else tp


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of ``cls`` that carries a ``help`` in its metadata."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if "help" not in meta:
            continue
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        kw: dict[str, Any] = {"dest": f.name, "help": meta["help"]}
        action = meta.get("action")
        if action == "bool":
            kw["action"] = argparse.BooleanOptionalAction
        elif action in ("store_true", "store_false"):
            kw["action"] = action
        else:
            kw["type"] = _scalar(hints[f.name])
            for key in ("choices", "nargs", "const"):
                if key in meta:  # choices may be a function: registries are read when the parser is built
                    kw[key] = meta[key]() if callable(meta[key]) else meta[key]
        parser.add_argument(flag, **kw)
