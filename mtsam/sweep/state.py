"""The sweep's own files in its state directory (next to Ray's experiment files for local storage).

``sweep.yaml``: the resolved config (``--resume`` must match it); ``state.json``: MLflow parent run,
experiment id and status; ``optuna.journal``: the Optuna study; ``best/``: the best adapter and config.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from mtsam.errors import ConfigError

from .plan import SweepPlan

STATE, SWEEP_YAML = "state.json", "sweep.yaml"
RUNTIME_ONLY = ("ray",)  # how to reach Ray may change between a run and its --resume


@dataclass
class SweepState:
    parent_run_id: str
    experiment_id: str
    status: str = "running"  # running | finished

    def save(self, state_dir: Path) -> None:
        _atomic_write(state_dir / STATE, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, state_dir: Path) -> SweepState | None:
        path = state_dir / STATE
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"sweep state {path} is unreadable ({exc}); start a new sweep with --name"
            ) from None


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_config(plan: SweepPlan) -> None:
    _atomic_write(plan.state_dir / SWEEP_YAML, plan.resolved_yaml())


def _first_difference(old: Any, new: Any, prefix: str = "") -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            diff = _first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
            if diff:
                return diff
        return None
    if old != new:
        return f"{prefix.rstrip('.')} (stored {old!r}, now {new!r})"
    return None


def _comparable(data: dict) -> dict:
    return {k: v for k, v in data.items() if k not in RUNTIME_ONLY}


def check_fresh(plan: SweepPlan) -> None:
    if (plan.state_dir / STATE).is_file() or (plan.state_dir / SWEEP_YAML).is_file():
        state = SweepState.load(plan.state_dir)
        if state is not None and state.status == "finished":
            raise ConfigError(
                f"sweep '{plan.name}' already finished at {plan.state_dir}; start another with --name NEW"
            )
        raise ConfigError(
            f"sweep '{plan.name}' already exists at {plan.state_dir}; continue it with --resume "
            f"or start another with --name NEW"
        )


def check_resumable(plan: SweepPlan) -> SweepState:
    state = SweepState.load(plan.state_dir)
    stored_path = plan.state_dir / SWEEP_YAML
    if state is None or not stored_path.is_file():
        raise ConfigError(f"--resume: nothing to resume, no sweep '{plan.name}' at {plan.state_dir}")
    if state.status == "finished":
        raise ConfigError(
            f"--resume: nothing to resume, sweep '{plan.name}' already finished ({plan.state_dir})"
        )
    stored = yaml.safe_load(stored_path.read_text()) or {}
    diff = _first_difference(_comparable(stored), _comparable(plan.resolved_dict()))
    if diff:
        raise ConfigError(
            f"--resume: the config differs from the stored one at {diff}; rerun the original command "
            f"with --resume, or start a new sweep with --name"
        )
    return state


def existing_status(state_dir: Path) -> str | None:
    """ "finished" or "interrupted" for a sweep that already has state in ``state_dir``, else None."""
    if not ((state_dir / STATE).is_file() or (state_dir / SWEEP_YAML).is_file()):
        return None
    try:
        state = SweepState.load(state_dir)
    except ConfigError:
        return "interrupted"
    return "finished" if state is not None and state.status == "finished" else "interrupted"


def next_free_name(plan: SweepPlan) -> str:
    """``<name>-2``, ``-3``, ...: the first name whose state directory holds no sweep."""
    base = plan.name
    for number in range(2, 10_000):
        name = f"{base}-{number}"
        if existing_status(plan.state_dir.with_name(name)) is None:
            return name
    raise ConfigError(f"name: no free name {base}-N found next to {plan.state_dir}; pass --name")
