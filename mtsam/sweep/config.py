"""The sweep configuration: one pydantic schema, loaded from YAML plus ``--set`` overrides.

The schema's defaults *are* the embedded quickstart (``tune/configs/quickstart.yaml`` spells them
out): tiny MTSAM on rendered scenes, 8 trials, ASHA, 2 concurrent trials of 1 CPU.
Every invalid value raises ``ConfigError`` with one line naming the field.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from mtsam.adapters.config import AdapterConfig
from mtsam.config import apply_overrides, read_yaml
from mtsam.errors import ConfigError

from .space import SearchSpace

QUICKSTART_SPACE = {
    "adapter": {"ranks": {"r1": [8, 16, 32], "r2": [8, 16, 32], "r3": [2, 4]}},
    "weighting": {"method": ["fixed", "dwa"], "fixed": {"weights": {"low": 0.5, "high": 4.0}}, "dwa": "auto"},
    "train": {"lr": {"low": 1.5e-3, "high": 6.0e-3, "log": True}},  # learns at 3e-3, not 3e-4 or 1e-2
}
QUICKSTART_BASE = {"train": {"epochs": 8}}
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchSection(_Section):
    mode: Literal["single", "pareto"] = "single"  # pareto: max Δb and min `cost` (NSGA-II)
    num_samples: int = Field(8, gt=0)
    max_concurrent: int = Field(2, gt=0)
    seed: int = 0
    # Objective when a baseline exists: "val/delta_b_task" or "val/delta_b_metric".
    metric: Literal["val/delta_b_task", "val/delta_b_metric"] = "val/delta_b_task"
    # Objective without a baseline (baselines.mode: none): a "val/<task>/<metric>" key; None = the
    # first metric of the first task.
    fallback_metric: str | None = None
    paper_point: bool = True  # evaluate the paper's setting first (points_to_evaluate)
    # pareto: the cost minimised next to the objective. trainable_params; train_flops = estimated
    # training GFLOPs per image (mtsam/flops.py); peak_memory = estimated peak GiB (memory_plan.py).
    cost: Literal["trainable_params", "train_flops", "peak_memory"] = "trainable_params"
    # The Optuna sampler (mtsam/sweep/algorithms.py): auto = tpe (single) / nsga2 (pareto); random,
    # qmc (Sobol), cmaes (numeric spaces, single objective), gp (Gaussian process), nsga2 / nsga3
    # (pareto only). PBT/PB2 draw only the first population with it (random or qmc).
    sampler: Literal["auto", "tpe", "random", "qmc", "cmaes", "gp", "nsga2", "nsga3"] = "auto"
    multivariate: bool = False  # tpe: multivariate TPE, grouped by the space's conditions
    # Seeds per configuration (mtsam/sweep/seeds.py): each configuration Optuna draws trains as k
    # parallel Tune trials (model and training seeds + 0..k-1); Optuna is told their mean; tables
    # show mean ± std. num_samples counts configurations, so a sweep runs num_samples × seeds trials.
    seeds: int = Field(1, ge=1)


class SchedulerSection(_Section):
    # asha in a pareto sweep is mo_asha: successive halving by non-dominated sorting of all the
    # objectives (mtsam/sweep/mo_asha.py); hyperband, median, pbt, pb2 need one objective
    type: Literal["asha", "mo_asha", "hyperband", "median", "pbt", "pb2", "fifo"] = "asha"
    grace_period: int = Field(1, gt=0)  # asha, mo_asha, median: epochs before any stop
    reduction_factor: float = Field(2.0, gt=1.0)  # asha, mo_asha, hyperband: keep 1/η at each rung
    perturbation_interval: int = Field(1, gt=0)  # pbt, pb2: epochs between exploit/explore steps


class BaselinesSection(_Section):
    # auto: train (or reuse from the MLflow store) one single-task run per task; none: no Δb.
    # An explicit `base.baseline` always wins.
    mode: Literal["auto", "none"] = "auto"
    adapter: AdapterConfig | None = None  # adapter of the single-task runs; None = the base adapter


class ResourcesSection(_Section):
    cpu: float = Field(1.0, gt=0.0)
    gpu: float = Field(0.0, ge=0.0)  # fractions pack several trials per GPU
    # share: a trial given 0.5 GPU may allocate at most half the card's memory (torch's per-process
    # fraction), so one trial's growth fails that trial instead of its neighbours; unlimited: no cap
    gpu_memory: Literal["share", "unlimited"] = "share"
    # Memory of one worker GPU in GB (10^9 bytes, as sold: 24 for an A10G, 80 for an A100/H100).
    # Given, a trial whose estimated peak (mtsam/memory_plan.py) exceeds its share is refused
    # before it starts; None: trials check against the GPU they land on.
    gpu_memory_gb: float | None = Field(None, gt=0.0)
    # Data-parallel workers per trial (Ray Train); cpu and gpu above are per worker, so a trial
    # holds workers × cpu CPUs and workers × gpu GPUs, all reserved together (mtsam/sweep/workers.py)
    workers: int = Field(1, ge=1)

    @field_validator("cpu", "gpu")
    @classmethod
    def _whole_above_one(cls, value: float) -> float:
        # Ray's rule: fractions only below 1 (0.5 GPU shares a card; 1.5 GPUs means nothing).
        if value > 1 and value != int(value):
            raise ValueError(f"fractions are allowed only below 1, got {value}")
        return value

    @field_validator("workers")
    @classmethod
    def _whole_gpus_for_workers(cls, value: int, info: ValidationInfo) -> int:
        # two ranks of one NCCL group may not share a GPU: a fraction could put both on one card
        gpu = info.data.get("gpu", 0.0)
        if value > 1 and 0 < gpu < 1:
            raise ValueError(
                f"{value} data-parallel workers need whole GPUs each, got resources.gpu {gpu:g} "
                "(expected 1 or more, or 0 for CPU workers)"
            )
        return value


class RaySection(_Section):
    address: str | None = None  # None: start a local Ray; "auto": join the cluster of this machine
    num_cpus: int | None = Field(2, gt=0)  # CPUs of a local Ray (None = all cores)


class SweepConfig(_Section):
    name: str = "quickstart"
    base_config: str | None = None  # run-config YAML the trials start from (None: mtsam/configs/default.yaml)
    base: dict[str, Any] = QUICKSTART_BASE  # run-config fields merged over base_config
    space: SearchSpace = SearchSpace.model_validate(QUICKSTART_SPACE)
    search: SearchSection = SearchSection()
    scheduler: SchedulerSection = SchedulerSection()
    baselines: BaselinesSection = BaselinesSection()
    resources: ResourcesSection = ResourcesSection()
    ray: RaySection = RaySection()
    storage: str = "./runs"  # local dir, shared (NFS) path or s3:// URI
    tracking_uri: str | None = None  # None: sqlite:///<storage>/mlflow.db (local storage)
    max_failures: int = Field(2, ge=0)  # retries of a crashed trial, from its last checkpoint
    keep_checkpoints: int = Field(1, gt=0)  # newest checkpoint folders kept per trial
    tensorboard: bool = False  # TensorBoard event files per trial too (~30 ms of driver time per result)
    top_k: int = Field(5, gt=0)
    # which trial runs get their selected epoch's adapter as an MLflow artifact
    log_adapters: Literal["top_k", "all", "none"] = "top_k"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        import re

        if not re.match(NAME_PATTERN, value):
            raise ValueError(f"must be letters, digits, '.', '_' or '-' (it names a folder), got {value!r}")
        return value


def _format(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-", "tagged-union")))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] not in ("value_error", "missing") and not isinstance(err.get("input"), (dict, list)):
        msg += f" (got {err.get('input')!r})"
    return f"{loc}: {msg}" if loc else msg


def validate_sweep(data: dict) -> SweepConfig:
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format(exc)) from None


def merge(base: dict, top: dict) -> dict:
    """Deep merge; a changed ``adapter.type`` / ``weighting.method`` replaces that section whole
    (the old family's fields would not validate for the new one)."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            switched = any(k in value and k in old and value[k] != old[k] for k in ("type", "method"))
            out[key] = copy.deepcopy(value) if switched else merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_sweep_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> tuple[SweepConfig, Path | None]:
    """YAML (or the embedded quickstart) + ``--set`` overrides → (validated config, its file).

    Top-level sections missing from the file take the quickstart's; a section the file gives
    replaces the default whole (so a file's ``space`` is exactly what it declares).
    """
    data = SweepConfig().model_dump(mode="json", exclude_none=True)
    if path is not None:
        data.update(read_yaml(path))
    data = apply_overrides(data, list(overrides or []))
    return validate_sweep(data), (Path(path).resolve() if path is not None else None)
