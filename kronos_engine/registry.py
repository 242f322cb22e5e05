"""Name -> class registries for strategies and callbacks.

The core never imports the built-in `kronos_engine.strategies`/`kronos_engine.callbacks` packages
(the top-level `strategies/` and `callbacks/` folders, installed under `kronos_engine`, so a
user module of the same name cannot shadow them) directly; it asks a registry,
which imports them on first use. User code registers its own classes with the same decorators or
names them as `module:Class` strings.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kronos_engine.errors import RegistryError

T = TypeVar("T")


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
        module = _import_from_cwd(module_name, exc)
        if module is None:
            raise RegistryError(
                f"cannot import module '{module_name}' for '{spec}': {exc}; run from the folder "
                f"that holds it or add that folder to PYTHONPATH"
            ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise RegistryError(
            f"module '{module_name}' has no attribute '{attr}' ('{spec}')"
        ) from None


def _import_from_cwd(module_name: str, exc: ImportError):
    """`scripts/train.py` puts scripts/ on sys.path, not the working directory: a user module
    next to where the command runs (as with `python -m`, and as when the run was started with
    PYTHONPATH=.) is imported from there, so resuming needs no PYTHONPATH either."""
    top = module_name.split(".")[0]
    cwd = Path.cwd()
    if not isinstance(exc, ModuleNotFoundError) or exc.name not in (top, module_name):
        return None
    if not ((cwd / f"{top}.py").is_file() or (cwd / top / "__init__.py").is_file()):
        return None
    if str(cwd) not in sys.path:
        sys.path.insert(0, str(cwd))
    try:
        return importlib.import_module(module_name)
    except ImportError:
        return None


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


STRATEGIES = Registry("strategy", "kronos_engine.strategies")
CALLBACKS = Registry("callback", "kronos_engine.callbacks")
