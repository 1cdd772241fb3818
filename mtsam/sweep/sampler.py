"""Search space → Optuna define-by-run sampling, and sampled values → a trial's run config.

Inside the sweep a sampled value is keyed by its space path (``adapter/ranks/r1``,
``weighting/fixed/weights/depth``, ``train/lr``): Ray un-flattens "/" so a trial's ``params.json`` is the
nested sampled config. In the Optuna study (and optuna-dashboard) the same values carry their dotted
param names (``adapter.r1``, ``weighting.weights.depth``, ``train.lr``; see ``params``).
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mtsam.adapters.config import LoRAConfig, NoAdapterConfig, SharedLoRAConfig, ToRAConfig
from mtsam.variants import VARIANTS
from mtsam.weighting import WEIGHTINGS

from .params import param_name
from .space import Dist, SearchSpace

ADAPTER_FIELDS = {
    cls.model_fields["type"].default: set(cls.model_fields)
    for cls in (ToRAConfig, LoRAConfig, SharedLoRAConfig, NoAdapterConfig)
}
PAPER_RANKS, PAPER_LR = (32, 32, 4), 1e-3
PAPER_WEIGHTS = {"semantic": 1.0, "depth": 1.0, "normal": 4.0}  # MTSAM's NYUv2 setting [1, 1, 4]
# The rest of the reference run (mtsam/configs/paper_nyuv2.yaml): warm-up, Adam's weight decay, λ
PAPER_TRAIN = {"warmup_ratio": 0.05, "weight_decay": 1e-6, "ortho_weight": 1.0}


@dataclass(frozen=True)
class Param:
    name: str
    dist: Dist
    when: tuple[str, tuple[Any, ...]] | None = None  # (parameter, values) it is conditional on

    def active(self, values: dict[str, Any]) -> bool:
        return self.when is None or values.get(self.when[0]) in self.when[1]


def _encode(value: Any) -> Any:
    # Optuna categoricals hold scalars only: list choices (targets) travel as JSON strings
    return json.dumps(list(value)) if isinstance(value, (list, tuple)) else value


def _decode(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) and value.startswith("[") else value


def space_params(space: SearchSpace, base: dict) -> list[Param]:
    """Every sampled parameter in sampling order, with its condition (a fixed adapter type or
    weighting method is the base config's, so conditions still apply)."""
    methods = space.weighting.method.choice if space.weighting.method else (base["weighting"]["method"],)
    tasks = base["data"]["tasks"]
    params: list[Param] = []

    def add(name: str, dist: Dist | None, on: str | None = None, values: tuple = ()) -> None:
        if dist is None:
            return
        params.append(Param(name, dist, (on, tuple(values)) if on else None))

    add("adapter/type", space.adapter.type)
    a = space.adapter
    for r in ("r1", "r2", "r3"):
        add(f"adapter/ranks/{r}", getattr(a.ranks, r), "adapter/type", ("tora",))
    add("adapter/scaling", a.scaling, "adapter/type", ("tora",))
    add("adapter/rank", a.rank, "adapter/type", ("lora", "shared_lora"))
    add("adapter/alpha", a.alpha, "adapter/type", ("lora", "shared_lora"))
    add("adapter/dropout", a.dropout, "adapter/type", ("tora", "lora", "shared_lora"))
    add("adapter/targets", a.targets, "adapter/type", ("tora", "lora", "shared_lora"))
    add("adapter/blocks", a.blocks, "adapter/type", ("tora", "lora", "shared_lora"))
    add("weighting/method", space.weighting.method)
    for method in methods:
        specs = WEIGHTINGS[method].hparams
        for hp, dist in space.weighting.method_params(method).items():
            names = (
                [f"weighting/{method}/{hp}/{t}" for t in tasks]
                if specs[hp].kind == "floats"
                else [f"weighting/{method}/{hp}"]
            )
            params.extend(Param(name, dist, ("weighting/method", (method,))) for name in names)
    t = space.train
    add("train/lr", t.lr)
    add("train/warmup_ratio", t.warmup_ratio)
    add("train/weight_decay", t.weight_decay)
    add("train/ortho_weight", t.ortho_weight, "adapter/type", ("tora",))
    return params


class SpaceSampler:
    """The define-by-run sampling of one Optuna trial (picklable, no closures): returns the sampled
    values keyed by space path."""

    def __init__(self, space: SearchSpace, base: dict) -> None:
        self.params = space_params(space, base)
        self.base_type = base["adapter"]["type"]
        self.base_method = base["weighting"]["method"]

    def __call__(self, trial) -> dict[str, Any]:
        values = {"adapter/type": self.base_type, "weighting/method": self.base_method}
        sampled = {}
        for p in self.params:
            if p.active(values):
                values[p.name] = sampled[p.name] = suggest(trial, p)
        return sampled


def suggest(trial, p: Param) -> Any:
    d, name = p.dist, param_name(p.name)
    if d.is_choice:
        return _decode(trial.suggest_categorical(name, [_encode(c) for c in d.choice]))
    if d.type == "int":
        return trial.suggest_int(name, int(d.low), int(d.high), log=d.log)
    return trial.suggest_float(name, d.low, d.high, log=d.log)


def nest(sampled: dict[str, Any]) -> dict:
    """{"adapter/ranks/r1": 32} → Ray's nested trial config {"adapter": {"ranks": {"r1": 32}}}."""
    out: dict = {}
    for path, value in sampled.items():
        *parents, leaf = path.split("/")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return out


def flatten(nested: dict, prefix: str = "") -> dict[str, Any]:
    """Ray's nested trial config → {"adapter/ranks/r1": 32, ...}."""
    out: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def apply_params(base: dict, sampled: dict[str, Any]) -> dict:
    """Base run config (dict) + flat sampled values → the trial's run config (dict, unvalidated)."""
    cfg = copy.deepcopy(base)
    flat = {k: _decode(v) for k, v in sampled.items()}
    adapter = cfg["adapter"]
    kind = flat.get("adapter/type", adapter["type"])
    if kind != adapter["type"]:  # keep only the fields the new family understands
        adapter = {k: v for k, v in adapter.items() if k in ADAPTER_FIELDS[kind]}
        adapter["type"] = kind
    if kind == "tora":
        ranks = list(adapter.get("ranks", PAPER_RANKS))
        for i, r in enumerate(("r1", "r2", "r3")):
            ranks[i] = int(flat.get(f"adapter/ranks/{r}", ranks[i]))
        adapter["ranks"] = ranks
    for key in ("scaling", "dropout", "targets", "rank", "alpha", "blocks"):
        if f"adapter/{key}" in flat and key in ADAPTER_FIELDS[kind]:
            adapter[key] = flat[f"adapter/{key}"]
    cfg["adapter"] = adapter

    weighting = cfg["weighting"]
    method = flat.get("weighting/method", weighting["method"])
    if method != weighting["method"]:
        weighting = {"method": method}
    specs = WEIGHTINGS[method].hparams
    for hp, spec in specs.items():
        if spec.kind == "floats":
            per_task = [flat.get(f"weighting/{method}/{hp}/{t}") for t in cfg["data"]["tasks"]]
            if all(v is not None for v in per_task):
                weighting[hp] = per_task
        elif f"weighting/{method}/{hp}" in flat:
            weighting[hp] = flat[f"weighting/{method}/{hp}"]
    cfg["weighting"] = weighting

    for key in ("lr", "warmup_ratio", "weight_decay", "ortho_weight"):
        if f"train/{key}" in flat:
            cfg["train"][key] = flat[f"train/{key}"]
    from .seeds import SEED_KEY, apply_seed  # search.seeds: which seed of its configuration

    return apply_seed(cfg, int(flat.get(f"{SEED_KEY}/index", 0)))


def paper_point(space: SearchSpace, base: dict) -> dict[str, Any]:
    """The paper's setting (ToRA 32/32/4 on q, k, v of all blocks, s 0.5, dropout 0.1, lr 1e-3,
    warm-up 0.05, weight decay 1e-6, λ 1, fixed [1, 1, 4]) restricted to what the space admits: on
    ``mtsam/configs/paper_nyuv2.yaml`` as the base it is that run config exactly.

    Ranks are clipped to the adapted layers' width (the encoder dim of small variants).
    """
    width = VARIANTS[base["model"]["variant"]].embed_dim if base["model"]["variant"] in VARIANTS else 10**9
    tora = ToRAConfig()
    wanted: dict[str, Any] = {
        "adapter/type": "tora",
        "adapter/scaling": tora.scaling,
        "adapter/dropout": tora.dropout,
        "adapter/targets": list(tora.targets),
        "weighting/method": "fixed",
        "adapter/blocks": "all",
        "train/lr": PAPER_LR,
        **{f"train/{k}": v for k, v in PAPER_TRAIN.items()},
    }
    for r, value in zip(("r1", "r2", "r3"), PAPER_RANKS):
        wanted[f"adapter/ranks/{r}"] = min(value, width)
    for t in base["data"]["tasks"]:
        wanted[f"weighting/fixed/weights/{t}"] = PAPER_WEIGHTS.get(t, 1.0)
    point = {}
    for p in space_params(space, base):
        value = wanted.get(p.name)
        if value is not None and p.dist.admits(value):
            point[p.name] = _encode(value)
    return point


def corner_points(space: SearchSpace, base: dict) -> Iterator[dict[str, Any]]:
    """Every adapter type × weighting method with all numeric parameters at low, then at high.

    Validating these catches a range that produces invalid run configs before any trial starts.
    """
    params = space_params(space, base)
    types = space.adapter.type.choice if space.adapter.type else (base["adapter"]["type"],)
    methods = space.weighting.method.choice if space.weighting.method else (base["weighting"]["method"],)
    for kind, method, end in itertools.product(types, methods, (0, -1)):
        values: dict[str, Any] = {"adapter/type": kind, "weighting/method": method}
        for p in params:
            if p.name in values or not p.active(values):
                continue
            d = p.dist
            if d.is_choice:
                values[p.name] = d.choice[end]
            else:
                value = d.low if end == 0 else d.high
                values[p.name] = int(value) if d.type == "int" else value
        yield values
