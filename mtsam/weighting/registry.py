"""Choose-a-weighting-by-name registry (LibMTL style)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from mtsam.errors import ConfigError

from .base import Weighting

WEIGHTINGS: dict[str, type[Weighting]] = {}

W = TypeVar("W", bound=type[Weighting])


def register_weighting(cls: W) -> W:
    """Class decorator registering ``cls`` under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__name__} must define a non-empty class attribute 'name'")
    # Re-registering the same class is harmless (module reloads); two classes under one name is a bug.
    if WEIGHTINGS.get(name, cls) is not cls:
        raise ValueError(f"weighting '{name}' is already registered by {WEIGHTINGS[name].__name__}")
    WEIGHTINGS[name] = cls
    return cls


def list_weightings() -> list[str]:
    return sorted(WEIGHTINGS)


def build_weighting(name: str, task_names: Sequence[str], **hparams: Any) -> Weighting:
    """Instantiate a registered weighting; ConfigError for unknown names or bad hyperparameters."""
    try:
        cls = WEIGHTINGS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"weighting: unknown method {name!r} (known: {', '.join(list_weightings())})"
        ) from None
    return cls(task_names, **hparams)
