"""A validated sweep config → the resolved plan: base run config, paths, objective.

Everything here is checked before anything is created or started, so a bad config fails with one
line and leaves no trace. Paths become absolute (trials run in their own working directories).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtsam.adapters.config import block_indices, parse_blocks
from mtsam.config import DEFAULT_CONFIG, RunConfig, config_to_dict, read_yaml, validate_config
from mtsam.errors import CheckpointError, ConfigError
from mtsam.variants import VARIANTS

from .config import SweepConfig
from .sampler import apply_params, corner_points
from .study import dashboard_location, study_file

PARAMS_METRIC = "model/trainable_params"
# search.cost → the metric every trial reports for it (mtsam/sweep/trainable.py)
COST_METRICS = {
    "trainable_params": PARAMS_METRIC,
    "train_flops": "model/train_gflops_per_image",
    "peak_memory": "model/est_peak_memory_gib",
}


@dataclass
class SweepPlan:
    config: SweepConfig  # resolved: base is the full run config, paths absolute
    config_file: str | None
    base: dict  # the full base run config (no baseline yet)
    exp_path: str  # Ray experiment directory: <storage>/<name> (path or URI)
    state_dir: Path  # local: sweep.yaml, state.json, optuna.journal, best/
    tracking_uri: str
    metric: str  # single objective (also ASHA's and the trainer's best-epoch selection)
    mode: str
    baseline_mode: str  # "inline" | "auto" | "none"
    objectives: list[tuple[str, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def tune_trials(self) -> int:
        """Ray Tune trials: each configuration once per seed (``search.seeds``)."""
        return self.config.search.num_samples * self.config.search.seeds

    def count_text(self) -> str:
        """ "8 trials", or "8 configurations × 3 seeds = 24 trials"."""
        s = self.config.search
        if s.seeds == 1:
            return f"{s.num_samples} trials"
        return f"{s.num_samples} configurations × {s.seeds} seeds = {self.tune_trials} trials"

    @property
    def pareto(self) -> bool:
        return self.config.search.mode == "pareto"

    @property
    def study_path(self) -> Path:
        return study_file(self.state_dir)  # the journal, or an older sweep's sqlite file

    @property
    def study_location(self) -> str:
        return dashboard_location(self.study_path)  # what optuna-dashboard takes

    def resolved_dict(self) -> dict:
        return self.config.model_dump(mode="json")

    def resolved_yaml(self) -> str:
        return yaml.safe_dump(self.resolved_dict(), sort_keys=False)

    def trial_config(self, sampled: dict[str, Any], baseline: dict | None) -> dict:
        """The run config of one trial: base + sampled values + baseline + selection metric."""
        cfg = apply_params(self.base, sampled)
        cfg["baseline"] = baseline
        # the trainer's best epoch (and saved adapter) follows the sweep's objective
        cfg["train"]["select_metric"] = (
            self.metric.removeprefix("val/") if "delta_b" in self.metric else self.metric
        )
        return cfg


def is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _abs(path: str) -> str:
    return str(Path(path.removeprefix("file://")).expanduser().resolve())


def _base_run_config(cfg: SweepConfig, config_file: Path | None) -> dict:
    from .config import merge

    if cfg.base_config:
        src = Path(cfg.base_config).expanduser()
        if not src.is_absolute() and config_file is not None:
            src = config_file.parent / src
        data = read_yaml(src)
    else:
        data = read_yaml(DEFAULT_CONFIG)
    data = merge(data, cfg.base)
    for key in ("model.checkpoint", "data.root"):
        section, name = key.split(".")
        value = data.get(section, {}).get(name)
        if isinstance(value, str) and value != "auto" and not is_uri(value):
            data[section][name] = _abs(value)  # relative to the working directory of the command
    try:
        run = validate_config(data)
    except ConfigError as exc:
        raise ConfigError(f"base.{exc}") from None
    if run.data.val_fraction == 0:
        raise ConfigError(
            "base.data.val_fraction: sweeps rank trials on a validation split, expected > 0 "
            "(0 trains on every image, for a single reference run)"
        )
    if run.train.eval_every != 1:
        raise ConfigError(
            f"base.train.eval_every: sweeps need validation metrics every epoch (schedulers compare "
            f"them), got {run.train.eval_every}"
        )
    _check_checkpoint(run)
    return config_to_dict(run)


def _check_checkpoint(run: RunConfig) -> None:
    """An official checkpoint must exist and be a readable torch file (mmap: no full read)."""
    ckpt = run.model.checkpoint
    if ckpt in (None, "auto"):
        return
    path = Path(ckpt)
    if not path.is_file():
        raise CheckpointError(f"base.model.checkpoint: file not found: {path}")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"base.model.checkpoint: not readable (permissions): {path}")
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any failure means the same thing to the user
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise CheckpointError(
            f"base.model.checkpoint: not a readable torch checkpoint: {path} ({reason})"
        ) from None


def _objective(cfg: SweepConfig, base: dict, has_baseline: bool) -> tuple[str, str]:
    from mtsam.evaluation import selection_metric
    from mtsam.tasks import build_tasks

    if has_baseline:
        return cfg.search.metric, "max"
    run = RunConfig.model_validate(
        {**base, "train": {**base["train"], "select_metric": cfg.search.fallback_metric}}
    )
    try:
        key, higher = selection_metric(run, build_tasks(run.data.channels()))
    except ConfigError as exc:
        raise ConfigError(f"search.fallback_metric: {str(exc).split(': ', 1)[-1]}") from None
    return key, "max" if higher else "min"


def _check_space(cfg: SweepConfig, base: dict) -> None:
    blocks = cfg.space.adapter.blocks
    spec = VARIANTS.get(base["model"]["variant"])
    for choice in blocks.choice if blocks is not None and spec is not None else ():
        block_indices(parse_blocks(choice), spec.depth, f"space.adapter.blocks ({base['model']['variant']})")
    for values in corner_points(cfg.space, base):
        try:
            validate_config(apply_params(base, values))
        except ConfigError as exc:
            shown = ", ".join(f"{k}={v}" for k, v in values.items() if not isinstance(v, float) or "/" in k)
            raise ConfigError(f"space: {shown} gives an invalid run config ({exc})") from None


def make_plan(cfg: SweepConfig, config_file: Path | None) -> SweepPlan:
    base = _base_run_config(cfg, config_file)
    _check_space(cfg, base)
    storage = cfg.storage if is_uri(cfg.storage) else _abs(cfg.storage)
    exp_path = f"{storage.rstrip('/')}/{cfg.name}"
    # Sweep state (Optuna study, parent run id) needs a POSIX path: on remote storage it stays
    # next to the driver in ./runs/<name>.
    state_dir = Path(exp_path) if not is_uri(storage) else Path(_abs("./runs")) / cfg.name
    tracking = (
        cfg.tracking_uri
        or f"sqlite:///{(Path(storage) if not is_uri(storage) else state_dir.parent)}/mlflow.db"
    )
    if tracking.startswith("sqlite:///") and not tracking.startswith("sqlite:////"):
        tracking = "sqlite:///" + _abs(tracking.removeprefix("sqlite:///"))
    baseline_mode = "inline" if base.get("baseline") else cfg.baselines.mode
    metric, mode = _objective(cfg, base, baseline_mode != "none")
    resolved = cfg.model_copy(
        update={
            "base": base,
            "base_config": None,
            "storage": storage,
            "tracking_uri": tracking,
        }
    )
    objectives = [(metric, mode)]
    if cfg.search.mode == "pareto":
        objectives.append((COST_METRICS[cfg.search.cost], "min"))
    plan = SweepPlan(
        config=resolved,
        config_file=str(config_file) if config_file else None,
        base=base,
        exp_path=exp_path,
        state_dir=state_dir,
        tracking_uri=tracking,
        metric=metric,
        mode=mode,
        baseline_mode=baseline_mode,
        objectives=objectives,
    )
    from .samplers import check_sampler
    from .schedulers import check_scheduler

    check_scheduler(plan)  # a bad scheduler / sampler combination fails here, before any trial
    check_sampler(plan)
    return plan
