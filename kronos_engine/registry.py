"""Name -> class registries for strategies and callbacks.

The core never imports the built-in `strategies`/`callbacks` packages directly; it asks a registry,
which imports them on first use. User code registers its own classes with the same decorators or
names them as `module:Class` strings.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """An unknown name or an unimportable `module:Class`; the message says what is available."""

    def __str__(self) -> str:  # KeyError quotes its message; we want one plain line
        return str(self.args[0])


def load_object(spec: str) -> Any:
    """Import `module:attr` (or `module.attr`) and return the attribute."""
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
    else:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise RegistryError(f"'{spec}' is not of the form module:Class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RegistryError(f"cannot import module '{module_name}' for '{spec}': {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise RegistryError(
            f"module '{module_name}' has no attribute '{attr}' ('{spec}')"
        ) from None


class Registry:
    """A named collection of classes with lazy loading of the built-in package."""

    def __init__(self, kind: str, builtin_package: str) -> None:
        self.kind = kind
        self._builtin_package = builtin_package
        self._items: dict[str, type] = {}
        self._loaded_builtins = False

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def decorator(cls: type[T]) -> type[T]:
            existing = self._items.get(name)
            if existing is not None and existing is not cls:
                raise RegistryError(f"{self.kind} '{name}' is already registered to {existing}")
            self._items[name] = cls
            return cls

        return decorator

    def _ensure_builtins(self) -> None:
        if not self._loaded_builtins:
            self._loaded_builtins = True
            importlib.import_module(self._builtin_package)

    def get(self, name: str) -> type:
        """Return the class registered as `name`, or imported from a `module:Class` string."""
        self._ensure_builtins()
        if name in self._items:
            return self._items[name]
        if ":" in name:
            return load_object(name)
        raise RegistryError(
            f"unknown {self.kind} '{name}'; registered: {sorted(self._items)} "
            f"(or give module:Class)"
        )

    def names(self) -> list[str]:
        self._ensure_builtins()
        return sorted(self._items)


STRATEGIES = Registry("strategy", "strategies")
CALLBACKS = Registry("callback", "callbacks")
