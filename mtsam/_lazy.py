"""Lazy package exports: a package lists ``name -> module`` and imports a module on first use,
so ``python -m mtsam.<tool>`` does not pay for torch / segment-anything / Ray it never touches."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], list[str]]:
    """Returns the package's ``__getattr__`` and ``__all__``."""

    def __getattr__(name: str):
        if name in exports:
            return getattr(import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, sorted(exports)
