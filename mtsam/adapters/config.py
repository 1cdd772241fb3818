"""Adapter configurations (peft style): one pydantic model per adapter family, chosen by ``type``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

# Names a user may target. q/k/v are the three output blocks of SAM's fused qkv linear.
QKV_PARTS = ("q", "k", "v")
OTHER_TARGETS = ("proj", "mlp.lin1", "mlp.lin2")
KNOWN_TARGETS = QKV_PARTS + OTHER_TARGETS


class _AdapterBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    targets: tuple[str, ...] = ("q", "k", "v")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must name at least one target")
        unknown = [t for t in value if t not in KNOWN_TARGETS]
        if unknown:
            raise ValueError(f"unknown target(s) {unknown}; expected some of {list(KNOWN_TARGETS)}")
        if len(set(value)) != len(value):
            raise ValueError("targets must not repeat")
        return tuple(t for t in KNOWN_TARGETS if t in value)  # canonical order


class ToRAConfig(_AdapterBase):
    """Tucker-decomposed update shared across tasks except the task factor U3."""

    type: Literal["tora"] = "tora"
    ranks: tuple[int, int, int] = (32, 32, 4)
    scaling: float = Field(0.5, gt=0.0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)

    @field_validator("ranks")
    @classmethod
    def _positive(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(r <= 0 for r in value):
            raise ValueError(f"every rank must be > 0, got {list(value)}")
        return value


class LoRAConfig(_AdapterBase):
    """Independent LoRA pair (A_t, B_t) per task."""

    type: Literal["lora"] = "lora"
    rank: int = Field(8, gt=0)
    alpha: float = Field(16.0, gt=0.0)


class SharedLoRAConfig(LoRAConfig):
    """One LoRA pair shared by all tasks."""

    type: Literal["shared_lora"] = "shared_lora"


class NoAdapterConfig(BaseModel):
    """Frozen encoder (only norms, no-mask table and decoders train)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["none"] = "none"


AdapterConfig = Annotated[
    ToRAConfig | LoRAConfig | SharedLoRAConfig | NoAdapterConfig, Field(discriminator="type")
]
_ADAPTER = TypeAdapter(AdapterConfig)


def parse_adapter_config(value: Any) -> ToRAConfig | LoRAConfig | SharedLoRAConfig | NoAdapterConfig:
    """Accept a config object or the equivalent plain dict (``{"type": "tora", ...}``)."""
    if isinstance(value, BaseModel):
        return value  # type: ignore[return-value]
    if value is None:
        value = {"type": "none"}
    return _ADAPTER.validate_python(value)
