"""Registries of the four extension kinds, each open to other installed packages.

An algorithm, a dataset, an augmentation policy or a tracker can live in a package of its own that
names it under one of these Python entry-point groups (in its ``pyproject.toml``)::

    [project.entry-points."fixmatch_ray.algorithms"]
    entmin = "my_package.entmin:EntMin"

:class:`Registry` holds the built-in entries and reads the group's entry points on its first
lookup, once per process: every process that looks a name up (the sweep driver, a trial, a
Train worker) finds the same plugins installed. A plugin that fails to import, holds the wrong
kind of object or takes a name already in use is one :class:`PluginError` line naming it and its
entry point. No torch or Ray here.
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Callable, Generic, Iterator, Mapping, TypeVar

from .errors import ConfigError

T = TypeVar("T")
# the entry-point group of each kind
GROUPS = {"algorithm": "fixmatch_ray.algorithms", "dataset": "fixmatch_ray.datasets",
          "policy": "fixmatch_ray.policies", "tracker": "fixmatch_ray.trackers"}


class PluginError(ConfigError):
    """An installed plugin that cannot be used: one line naming it and its entry point."""


class Registry(Mapping[str, T], Generic[T]):
    """Name → entry (a class or a spec) of one extension kind: built-ins plus entry points.

    ``check(name, obj)`` returns why a loaded entry point is not a valid entry (or None); an
    entry's own name (``obj.name``) must be the name it is registered under."""

    def __init__(self, kind: str, check: Callable[[str, object], str | None]):
        self.kind, self.group, self.check = kind, GROUPS[kind], check
        self.builtins: dict[str, T] = {}
        self._entries: dict[str, T] | None = None

    def add(self, name: str, obj: T) -> T:
        """Register a built-in entry (before or after plugins are read)."""
        if name in self.builtins and self.builtins[name] is not obj:
            raise ValueError(f"{self.kind} name {name!r} is already registered")
        self.builtins[name] = obj
        if self._entries is not None:
            self._entries[name] = obj
        return obj

    def reload(self) -> None:
        """Forget the plugins read so far: the next lookup reads the entry points again (a package
        installed into a running process)."""
        self._entries = None

    def _all(self) -> dict[str, T]:
        if self._entries is None:
            entries = dict(self.builtins)
            for ep in sorted(entry_points(group=self.group), key=lambda e: e.name):
                entries[ep.name] = self._load(ep, entries)
            self._entries = entries
        return self._entries

    def _load(self, ep, entries: dict[str, T]) -> T:
        where = f"{self.kind} plugin {ep.name!r} (entry point {self.group}: {ep.name} = {ep.value})"
        if ep.name in entries:
            raise PluginError(f"{where}: the name {ep.name!r} is taken by another {self.kind}; rename the entry point")
        try:
            obj = ep.load()
        except Exception as e:  # anything the plugin's import raises: its package is broken or missing
            first = str(e).splitlines()[0] if str(e) else ""
            raise PluginError(f"{where} failed to import: {type(e).__name__}: {first}") from None
        problem = self.check(ep.name, obj)
        if problem is None and getattr(obj, "name", ep.name) != ep.name:
            problem = f"its name is {getattr(obj, 'name')!r}; the entry point must carry the same name"
        if problem is not None:
            raise PluginError(f"{where}: {problem}")
        return obj

    def __getitem__(self, name: str) -> T:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def names(self) -> tuple[str, ...]:
        return tuple(self._all())


def subclass_of(base: type) -> Callable[[str, object], str | None]:
    """A registry check: the entry point must be a subclass of ``base``."""
    def check(name: str, obj: object) -> str | None:
        if isinstance(obj, type) and issubclass(obj, base):
            return None
        return f"expected a subclass of {base.__module__}.{base.__qualname__}, got {obj!r}"
    return check
