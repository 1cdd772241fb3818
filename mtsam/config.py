"""The run configuration: one pydantic schema for model / adapter / data / train / weighting.

Loaded from YAML (or a dict) with ``--set a.b=value`` overrides and validated at the boundary: any
invalid value raises ``ConfigError`` with a one-line message naming the field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .adapters.config import AdapterConfig, ToRAConfig
from .errors import ConfigError

DEFAULT_CHANNELS = {"depth": 1, "normal": 3}


def cache_dir() -> Path:
    """Where the embedded default renders its data and tiny SAM checkpoint."""
    root = (
        os.environ.get("MTSAM_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mtsam"
    )
    return Path(root).expanduser().resolve()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    variant: str = "tiny"
    # An official SAM .pth of this variant, or "auto" (small variants only): a SAM-format checkpoint
    # written once into the cache from segment-anything's own builder, loaded through the same code.
    checkpoint: str | None = "auto"
    image_size: int | None = None
    normalize: Literal["sam", "none"] = "sam"
    seed: int = 0
    # Seeded noise (relative std) on the per-channel no-mask rows; 0 = the paper (all rows equal
    # SAM's vector). The embedded demo sets 1.0: its short runs never separate equal rows.
    no_mask_jitter: float = Field(0.0, ge=0.0)


class ScenesSection(_Section):
    train: int = Field(48, gt=0)
    val: int = Field(16, gt=0)
    height: int = Field(48, ge=16)
    width: int = Field(64, ge=16)
    seed: int = 0


class DataSection(_Section):
    dataset: Literal["nyuv2", "cityscapes", "scenes"] = "scenes"
    root: str | None = None  # required for nyuv2/cityscapes; scenes default: <cache>/scenes-<params>
    tasks: list[str] = ["semantic", "depth", "normal"]
    num_classes: int = Field(13, gt=1)
    # 0 = train on every training image (the reference): no validation, the last epoch is selected
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    split_seed: int = 0
    batch_size: int = Field(2, gt=0)
    eval_batch_size: int | None = Field(None, gt=0)
    num_workers: int = Field(0, ge=0)
    augment: bool = True
    scenes: ScenesSection = ScenesSection()

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one task is required")
        if len(set(value)) != len(value):
            raise ValueError(f"tasks repeat: {value}")
        return value

    def channels(self) -> dict[str, int]:
        return {t: self.num_classes if t == "semantic" else DEFAULT_CHANNELS.get(t, 1) for t in self.tasks}


class TrainSection(_Section):
    epochs: int = Field(3, gt=0)
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-6, ge=0.0)
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0)
    grad_accum: int = Field(1, gt=0)
    ortho_weight: float = Field(1.0, ge=0.0)  # λ of the orthogonality regulariser
    grad_clip: float | None = Field(None, gt=0.0)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: bf16 autocast on CUDA, float32 on CPU; bf16 / fp32 force one (mtsam/device.py)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    eval_every: int = Field(1, gt=0)
    # "delta_b_task" (needs a baseline) or a metric key like "val/semantic/miou"; None = automatic.
    select_metric: str | None = None
    max_steps_per_epoch: int | None = Field(None, gt=0)
    # Recompute encoder blocks in backward instead of keeping their activations: same losses and
    # gradients, a fraction of the memory (mtsam/memory_plan.py estimates it), ~1/3 more encoder time.
    activation_checkpointing: bool = False


class WeightingSection(BaseModel):
    model_config = ConfigDict(extra="allow")  # method hyperparameters, validated by the method itself
    method: str = "fixed"

    def hparams(self) -> dict[str, Any]:
        # None removes a hyperparameter (e.g. `--set weighting.method=ew --set weighting.weights=null`).
        return {k: v for k, v in (self.model_extra or {}).items() if v is not None}


class ReferenceSection(_Section):
    """One switch per behaviour where we depart from the official MTSAM code (docs/REFERENCE.md).

    Defaults are ours; ``mtsam/configs/paper_nyuv2.yaml`` sets every switch to the reference.
    Input normalisation (``model.normalize``), precision (``train.precision``) and the data protocol
    (``data.val_fraction``, ``data.batch_size``, ``train.grad_accum``) have their own fields.
    """

    # "train": the neck's two LayerNorm2d train with the encoder norms (ours); "frozen": the
    # reference's name rule ("norm" in the parameter name) leaves them (neck.1, neck.3) frozen
    neck_norms: Literal["train", "frozen"] = "train"
    # "renormalize": resized normals are re-normalised and validity resized by nearest (ours);
    # "bilinear": resized bilinearly as they are, shortened vectors near holes stay valid
    normal_augment: Literal["renormalize", "bilinear"] = "renormalize"
    # lr factor of optimiser step k < warmup: "shifted" (k+1)/warmup (ours: the first step moves);
    # "reference" k/warmup (the first step has lr 0)
    warmup: Literal["shifted", "reference"] = "shifted"
    # also report the reference's per-image depth/normal protocol as <split>_per_image/... metrics
    per_image_metrics: bool = False


class FaultsSection(_Section):
    """Fault injection for reliability tests; never set in real runs."""

    crash_at_epoch: int | None = Field(None, gt=0)
    crash_marker: str | None = None  # only the first run to create this file crashes
    nan_at_epoch: int | None = Field(None, gt=0)
    nan_marker: str | None = None
    disk_full_at_epoch: int | None = Field(None, gt=0)  # checkpoint write fails with ENOSPC
    disk_full_marker: str | None = None


class RunConfig(_Section):
    model: ModelSection = ModelSection()
    adapter: AdapterConfig = ToRAConfig()
    data: DataSection = DataSection()
    train: TrainSection = TrainSection()
    weighting: WeightingSection = WeightingSection()
    reference: ReferenceSection = ReferenceSection()
    # Explicit single-task baseline {"val": {task: {metric: v}}, "test": {...}}; None = no Δb.
    baseline: dict[str, dict[str, dict[str, float]]] | None = None
    faults: FaultsSection = FaultsSection()

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        from .evaluation import check_baseline
        from .tasks import build_tasks
        from .weighting import build_weighting

        try:
            tasks = build_tasks(self.data.channels())
        except ConfigError as exc:
            raise ValueError(f"data.tasks: {exc}") from None
        check_baseline(self.baseline, tasks)
        blocks = getattr(self.adapter, "blocks", "all")
        if blocks != "all":
            from .adapters.config import block_indices
            from .variants import VARIANTS

            spec = VARIANTS.get(self.model.variant)
            if spec is not None:  # an unknown variant is reported when the model is built
                try:
                    block_indices(blocks, spec.depth, f"adapter.blocks ({self.model.variant})")
                except ConfigError as exc:
                    raise ValueError(str(exc)) from None
        build_weighting(self.weighting.method, self.data.tasks, **self.weighting.hparams())
        if self.data.dataset != "scenes":
            if not self.data.root:
                raise ValueError(f"data.root: required for dataset {self.data.dataset!r}")
            if not Path(self.data.root).expanduser().is_dir():
                raise ValueError(f"data.root: dataset folder not found: {self.data.root}")
        ckpt = self.model.checkpoint
        if ckpt not in (None, "auto") and not Path(ckpt).expanduser().is_file():
            raise ValueError(f"model.checkpoint: file not found: {ckpt}")
        return self


DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"


def _format_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    parts = [str(p) for p in err["loc"] if not str(p).startswith("function-after")]
    if len(parts) > 2 and parts[0] == "adapter":  # drop the union tag: adapter.tora.ranks → adapter.ranks
        parts.pop(1)
    loc = ".".join(parts)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif "input" in err and err["type"] not in ("value_error",) and not isinstance(err["input"], dict):
        msg += f" (got {err['input']!r})"
    return f"{loc}: {msg}" if loc and not msg.startswith(loc) else msg


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` → (["a", "b"], YAML-parsed value)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. train.lr=3e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set each ``a.b=value`` in ``data``; an override switching ``adapter.type`` or
    ``weighting.method`` drops the old family's keys with a note (``mtsam.config_switch``)."""
    from .config_switch import drop_foreign_keys

    parsed = []
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            if not isinstance(node.get(part, {}), dict):
                raise ConfigError(f"--set {text!r}: {part} is not a section")
            node = node.setdefault(part, {})
        node[path[-1]] = value
        parsed.append((path, value))
    drop_foreign_keys(data, parsed)
    return data


def read_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config {path}: file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config {path}:{where} malformed YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def validate_config(data: dict) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc)) from None


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None, base: dict | None = None
) -> RunConfig:
    """YAML file (or ``base`` dict, or the embedded default) + ``--set`` overrides → validated RunConfig."""
    if path is None and base is None:
        path = DEFAULT_CONFIG
    data = read_yaml(path) if path else dict(base)
    return validate_config(apply_overrides(data, list(overrides or [])))


def config_to_dict(config: RunConfig) -> dict:
    return config.model_dump(mode="json")


def dump_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)
