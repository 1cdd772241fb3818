"""The declared search space: which run-config fields a sweep samples, and over what.

YAML shape (every entry optional; an absent entry keeps the base run config's value)::

    space:
      adapter:
        type: [tora, lora]                   # a list = categorical choice
        ranks: {r1: [8, 16, 32], r2: [8, 16, 32], r3: [2, 4]}
        scaling: {low: 0.25, high: 1.0}      # float range (add log: true for log scale)
        dropout: {low: 0.0, high: 0.2}
        targets: [[q, k, v], [q, v]]
        rank: {low: 4, high: 16, type: int, log: true}   # lora / shared_lora
        blocks: [all, "last:12", "last:6"]   # which encoder blocks adapt ("last:K" or index lists)
      weighting:
        method: [fixed, dwa]
        fixed: {weights: {low: 0.5, high: 4.0}}  # per-task weights: one float per task
        dwa: auto                            # every hyperparameter over the registry's range
      train:
        lr: {low: 1.0e-4, high: 1.0e-2, log: true}
        warmup_ratio: {low: 0.0, high: 0.1}
        weight_decay: {low: 1.0e-6, high: 1.0e-2, log: true}
        ortho_weight: {low: 0.1, high: 10.0, log: true}   # λ, ToRA only

Parameters are conditional: ranks/scaling/λ only for ToRA, rank/alpha only for LoRA families,
``weighting.<method>.*`` only when that method is drawn (Optuna define-by-run, see ``sampler``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_serializer, model_validator

from mtsam.adapters.config import parse_blocks
from mtsam.weighting import WEIGHTINGS, HParam

ADAPTER_TYPES = ("tora", "lora", "shared_lora", "none")


class Dist(BaseModel):
    """One sampled parameter: a categorical ``choice`` or a numeric ``low``..``high`` range."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    choice: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    type: Literal["float", "int"] = "float"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # [a, b] = choice; a bare scalar = a fixed value (a choice of one)
        if isinstance(value, (list, tuple)):
            return {"choice": list(value)}
        if value is None or isinstance(value, (str, int, float, bool)):
            return {"choice": [value]}
        return value

    @model_validator(mode="after")
    def _check(self) -> Dist:
        if self.choice is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either a choice list or low/high, not both")
            if not self.choice:
                raise ValueError("choice list is empty")
            return self
        if self.low is None or self.high is None:
            raise ValueError("expected a choice list [a, b, ...] or a range {low: ..., high: ...}")
        if not self.low < self.high:
            raise ValueError(f"low must be < high, got low={self.low:g} high={self.high:g}")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got {self.low:g}")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("int range needs integer low/high")
        return self

    @model_serializer(mode="plain")
    def _compact(self) -> Any:
        # the input shorthand again: a list for a choice, {low, high, ...} for a range
        if self.is_choice:
            return list(self.choice)
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.type == "int":
            out["type"] = "int"
        return out

    @property
    def is_choice(self) -> bool:
        return self.choice is not None

    def admits(self, value: Any) -> bool:
        if self.is_choice:
            return value in self.choice
        return isinstance(value, (int, float)) and self.low <= value <= self.high

    def describe(self) -> str:
        if self.is_choice:
            return "choice " + ", ".join(_short(c) for c in self.choice)
        kind = "int" if self.type == "int" else "float"
        return f"{kind} [{self.low:g}, {self.high:g}]" + (" log" if self.log else "")


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _check_keys(value: Any, known: tuple[str, ...], what: str) -> Any:
    # One clear line naming the known parameters beats pydantic's generic "extra inputs" message.
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"unknown {what} {unknown[0]!r} (known: {', '.join(known)})")
    return value


class _Space(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known(cls, value: Any) -> Any:
        return _check_keys(value, tuple(cls.model_fields), "parameter")


def _rank_dist(name: str, dist: Dist | None) -> Dist | None:
    """Ranks are integers > 0; a range of them is an int range whatever ``type`` says."""
    if dist is None:
        return None
    values = dist.choice if dist.is_choice else (dist.low,)
    bad = [
        v for v in values if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 or v != int(v)
    ]
    if bad:
        raise ValueError(f"{name}: ranks must be integers > 0, got {bad[0]!r}")
    return dist if dist.is_choice else dist.model_copy(update={"type": "int"})


class RanksSpace(_Space):
    r1: Dist | None = None
    r2: Dist | None = None
    r3: Dist | None = None

    @model_validator(mode="after")
    def _positive(self) -> RanksSpace:
        for name in ("r1", "r2", "r3"):
            object.__setattr__(self, name, _rank_dist(name, getattr(self, name)))
        return self


class AdapterSpace(_Space):
    type: Dist | None = None
    ranks: RanksSpace = RanksSpace()
    scaling: Dist | None = None
    dropout: Dist | None = None
    targets: Dist | None = None
    rank: Dist | None = None
    alpha: Dist | None = None
    blocks: Dist | None = None

    @model_validator(mode="after")
    def _types(self) -> AdapterSpace:
        if self.blocks is not None:
            if not self.blocks.is_choice:
                raise ValueError('blocks: must be a choice list, e.g. [all, "last:12", [20, 21, 22, 23]]')
            try:  # canonical forms, so "last: 6" and "last:6" are one choice
                canonical = [parse_blocks(b) for b in self.blocks.choice]
            except ValueError as exc:
                raise ValueError(f"blocks: {exc}") from None
            choice = [list(b) if isinstance(b, tuple) else b for b in canonical]
            object.__setattr__(self, "blocks", Dist(choice=choice))
        object.__setattr__(self, "rank", _rank_dist("rank", self.rank))
        if self.type is not None:
            if not self.type.is_choice:
                raise ValueError("type: must be a choice list, e.g. [tora, lora]")
            unknown = [t for t in self.type.choice if t not in ADAPTER_TYPES]
            if unknown:
                raise ValueError(f"type: unknown adapter {unknown[0]!r} (known: {', '.join(ADAPTER_TYPES)})")
        if self.targets is not None and not self.targets.is_choice:
            raise ValueError("targets: must be a choice list of target lists, e.g. [[q, k, v], [q, v]]")
        return self


WeightingEntry = Literal["auto"] | dict[str, Literal["auto"] | Dist]


class WeightingSpace(BaseModel):
    """``method`` plus one entry per method name with that method's own hyperparameters.

    YAML keeps the entries next to ``method`` (``fixed: {weights: ...}``); internally they live in
    ``methods`` and are written back flat, so a dumped space is valid input again.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    method: Dist | None = None
    methods: dict[str, WeightingEntry] = {}

    @model_validator(mode="before")
    @classmethod
    def _methods(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        _check_keys(value, ("method", *sorted(WEIGHTINGS)), "weighting method")
        entries = {k: v for k, v in value.items() if k != "method"}
        for name, entry in entries.items():
            known = tuple(WEIGHTINGS[name].hparams)
            if entry == "auto":
                continue
            if not isinstance(entry, dict):
                raise ValueError(
                    f"{name}: expected 'auto' or a mapping of its hyperparameters ({', '.join(known)})"
                )
            _check_keys(entry, known, f"hyperparameter of {name}")
        return {"method": value.get("method"), "methods": entries}

    @model_validator(mode="after")
    def _check(self) -> WeightingSpace:
        if self.method is not None:
            if not self.method.is_choice:
                raise ValueError("method: must be a choice list, e.g. [fixed, dwa]")
            unknown = [m for m in self.method.choice if m not in WEIGHTINGS]
            if unknown:
                raise ValueError(
                    f"method: unknown weighting {unknown[0]!r} (known: {', '.join(sorted(WEIGHTINGS))})"
                )
        for name, entry in self.methods.items():
            for hp, dist in ({} if entry == "auto" else entry).items():
                if dist == "auto" and _auto_dist(WEIGHTINGS[name].hparams[hp]) is None:
                    raise ValueError(f"{name}.{hp}: no search range known; give a choice list or low/high")
        return self

    @model_serializer(mode="wrap")
    def _flat(self, handler) -> dict:
        data = handler(self)
        return {"method": data["method"], **data["methods"]}

    def method_params(self, method: str) -> dict[str, Dist]:
        """The sampled hyperparameters of ``method`` ('auto' resolved to the registry's ranges)."""
        entry = self.methods.get(method)
        if entry is None:
            return {}
        specs = WEIGHTINGS[method].hparams
        if entry == "auto":
            entry = {name: "auto" for name, spec in specs.items() if _auto_dist(spec) is not None}
        return {name: _auto_dist(specs[name]) if d == "auto" else d for name, d in entry.items()}


def _auto_dist(spec: HParam) -> Dist | None:
    if spec.kind == "choice":
        return Dist(choice=spec.choices)
    if spec.low is None or spec.high is None:
        return None
    return Dist(low=spec.low, high=spec.high, log=spec.log, type="int" if spec.kind == "int" else "float")


class TrainSpace(_Space):
    lr: Dist | None = None
    warmup_ratio: Dist | None = None
    weight_decay: Dist | None = None
    ortho_weight: Dist | None = None


class SearchSpace(_Space):
    adapter: AdapterSpace = AdapterSpace()
    weighting: WeightingSpace = WeightingSpace()
    train: TrainSpace = TrainSpace()
