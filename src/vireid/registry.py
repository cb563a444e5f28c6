"""Name -> class registries of datasets, methods and protocols: leaves that import their built-ins on first use.

Each registry knows the modules that hold its built-in entries by name only; the first lookup
(`get`, `names`, `in`, iteration) imports them, and their `@register_*` decorators fill it. So this
module imports nothing of vireid but `core`, and a user's entries register the same way at run time.
Every registered class carries an `Options` dataclass (its config section); see docs/extending.md.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from .core import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named mapping filled by a decorator; lookups of unknown names suggest the closest one."""

    def __init__(self, kind: str, builtins: Sequence[str] = ()) -> None:
        self.kind = kind
        self.builtins = tuple(builtins)
        self._items: dict[str, T] = {}
        self._loaded = not self.builtins

    def _load_builtins(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # before importing: a built-in module may look itself up while it registers
        for module in self.builtins:
            importlib.import_module(module)

    def register(self, name: str, *, overwrite: bool = False) -> Callable[[T], T]:
        """Decorator: `@REGISTRY.register("name")` stores the decorated object under `name`."""

        def deco(obj: T) -> T:
            self._load_builtins()  # a user's entry must not be replaced later by a built-in of the same name
            if name in self._items and not overwrite and self._items[name] is not obj:
                raise ConfigError(f"{self.kind} {name!r} is already registered; pass overwrite=True to replace it")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the object registered as `name` or raise ConfigError naming the closest match."""
        self._load_builtins()
        if name not in self._items:
            close = difflib.get_close_matches(str(name), list(self._items), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown {self.kind} {name!r}{hint} Available: {', '.join(self.names()) or 'none'}")
        return self._items[name]

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching the shell-style `pattern` (e.g. "llcm*"), sorted."""
        self._load_builtins()
        return sorted(n for n in self._items if fnmatch.fnmatchcase(n, pattern))

    def unregister(self, name: str) -> None:
        """Remove `name` (a user's temporary entry, e.g. in a test); unknown names raise ConfigError."""
        self.get(name)
        del self._items[name]

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


DATASETS: Registry[Any] = Registry("dataset", builtins=(
    "vireid.data.datasets.sysu", "vireid.data.datasets.regdb", "vireid.data.datasets.llcm",
    "vireid.data.datasets.folder"))
METHODS: Registry[Any] = Registry("method", builtins=(
    "vireid.methods.baseline", "vireid.methods.mpanet", "vireid.methods.lba", "vireid.methods.cmgan",
    "vireid.methods.jsia", "vireid.methods.d2rl"))
PROTOCOLS: Registry[Any] = Registry("protocol", builtins=(
    "vireid.protocols.sysu", "vireid.protocols.regdb", "vireid.protocols.llcm"))


def register_dataset(name: str, *, overwrite: bool = False) -> Callable[[T], T]:
    """Register a dataset reader class: `Reader(root, **options).load() -> ReIDDataset`, options in `Reader.Options`."""
    return DATASETS.register(name, overwrite=overwrite)


def register_method(name: str, *, overwrite: bool = False) -> Callable[[T], T]:
    """Register a Method subclass (its options dataclass is `Method.Options`)."""
    return METHODS.register(name, overwrite=overwrite)


def register_protocol(name: str, *, overwrite: bool = False) -> Callable[[T], T]:
    """Register a protocol class.

    It declares `Options`, `dataset` (the reader it evaluates) and `build(test_samples, root, **options)`.
    """
    return PROTOCOLS.register(name, overwrite=overwrite)
