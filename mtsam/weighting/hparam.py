"""Declarative hyperparameter specs for weighting methods.

``low``/``high``/``log`` describe the *search* range (what a sweep samples); ``gt``/``ge``/``lt``/``le``
describe *validity* (what a config may set).  They differ on purpose: DWA's temperature is searched in
[0.5, 10] but any value > 0 is legal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from mtsam.errors import ConfigError

Kind = Literal["float", "int", "floats", "choice"]


@dataclass(frozen=True)
class HParam:
    """One searchable hyperparameter.

    kind: "float" | "int" | "floats" (one float per task, each in [low, high]) | "choice" (one of
    ``choices``).  ``default=None`` for "floats" means 1.0 for every task (its length depends on T).
    """

    kind: Kind
    low: float | None = None
    high: float | None = None
    log: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    help: str = ""

    def __post_init__(self) -> None:
        # Specs are written by developers, so inconsistencies are bugs, not config errors.
        if self.kind == "choice":
            if not self.choices or self.default not in self.choices:
                raise ValueError(f"choice HParam needs choices containing its default, got {self!r}")
        elif self.kind in ("float", "int", "floats"):
            if self.low is None or self.high is None or not self.low < self.high:
                raise ValueError(f"numeric HParam needs low < high, got {self!r}")
            if self.log and self.low <= 0:
                raise ValueError(f"log-scale HParam needs low > 0, got {self!r}")
        else:
            raise ValueError(f"unknown HParam kind {self.kind!r}")

    def validate(self, name: str, value: Any, num_tasks: int) -> Any:
        """``value`` normalised (float/int/tuple/str), or ConfigError naming ``weighting.<name>``."""
        key = f"weighting.{name}"
        if self.kind == "choice":
            if value not in self.choices:
                raise ConfigError(f"{key}: must be one of {', '.join(self.choices)}, got {value!r}")
            return value
        if self.kind == "floats":
            if value is None:
                return (1.0,) * num_tasks
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
                raise ConfigError(f"{key}: must be a list of {num_tasks} numbers, got {value!r}")
            if len(value) != num_tasks:
                raise ConfigError(f"{key}: must have one value per task ({num_tasks}), got {len(value)}")
            return tuple(self._number(key, v, float) for v in value)
        return self._number(key, value, int if self.kind == "int" else float)

    def _number(self, key: str, value: Any, cast: type) -> float | int:
        # bool is an int subclass; "true" for a float knob is always a config mistake.
        ok = isinstance(value, int) if cast is int else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok:
            raise ConfigError(f"{key}: must be {'an int' if cast is int else 'a number'}, got {value!r}")
        value = cast(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be finite, got {value!r}")
        for bound, holds, op in (
            (self.gt, lambda b: value > b, ">"),
            (self.ge, lambda b: value >= b, ">="),
            (self.lt, lambda b: value < b, "<"),
            (self.le, lambda b: value <= b, "<="),
        ):
            if bound is not None and not holds(bound):
                raise ConfigError(f"{key}: must be {op} {bound:g}, got {value:g}")
        return value
