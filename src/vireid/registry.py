"""Name -> object registries; one small decorator per kind (datasets, methods, ...)."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from .core import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named mapping filled by a decorator; lookups of unknown names suggest the closest one."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, *, overwrite: bool = False) -> Callable[[T], T]:
        """Decorator: `@REGISTRY.register("name")` stores the decorated object under `name`."""

        def deco(obj: T) -> T:
            if name in self._items and not overwrite and self._items[name] is not obj:
                raise ConfigError(f"{self.kind} {name!r} is already registered; pass overwrite=True to replace it")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the object registered as `name` or raise ConfigError naming the closest match."""
        if name not in self._items:
            close = difflib.get_close_matches(name, list(self._items), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown {self.kind} {name!r}{hint} Available: {', '.join(sorted(self._items)) or 'none'}")
        return self._items[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


DATASETS: Registry = Registry("dataset")
METHODS: Registry = Registry("method")


def register_dataset(name: str, *, overwrite: bool = False):
    """Register a dataset reader class under `name`."""
    return DATASETS.register(name, overwrite=overwrite)


def register_method(name: str, *, overwrite: bool = False):
    """Register a Method class under `name`."""
    return METHODS.register(name, overwrite=overwrite)
