"""Named registries for pluggable parts (sources, labelers, exporters).

Built-ins register themselves with ``@REGISTRY.register("name")`` when their module is imported
explicitly; third-party plugins are found through an entry-point group and loaded on first lookup.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from datasetagent.errors import ConfigError

T = TypeVar("T")

log = logging.getLogger(__name__)


class Registry(Generic[T]):
    """A mapping of unique names to factories of one kind."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._plugins_loaded = entry_point_group is None

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name``; a name taken twice is an error."""

        def decorate(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorate

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ConfigError(f"{self.kind} {name!r} is registered twice; rename one of them")
        self._items[name] = obj

    def _load_plugins(self) -> None:
        if self._plugins_loaded or self.entry_point_group is None:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            if ep.name in self._items:
                log.warning("plugin %s %r ignored: the name is taken", self.kind, ep.name)
                continue
            try:
                self._items[ep.name] = ep.load()
            except Exception as exc:  # a broken plugin must not break the built-ins
                log.warning("plugin %s %r failed to load: %s", self.kind, ep.name, exc)

    def get(self, name: str) -> T:
        self._load_plugins()
        try:
            return self._items[name]
        except KeyError as exc:
            known = sorted(self._items)
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}: {hint}known: {', '.join(known) or 'none'}"
            ) from exc

    def find(self, name: str) -> T | None:
        """The entry ``name``, or None; plugins are loaded only for a name no built-in has."""
        if name not in self._items:
            self._load_plugins()
        return self._items.get(name)

    def values(self) -> list[T]:
        """Every entry, in the order registered (built-ins first, then plugins)."""
        self._load_plugins()
        return list(self._items.values())

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
