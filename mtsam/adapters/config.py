"""Adapter configurations (peft style): one pydantic model per adapter family, chosen by ``type``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from ..errors import ConfigError

# Names a user may target. q/k/v are the three output blocks of SAM's fused qkv linear.
QKV_PARTS = ("q", "k", "v")
OTHER_TARGETS = ("proj", "mlp.lin1", "mlp.lin2")
KNOWN_TARGETS = QKV_PARTS + OTHER_TARGETS


def parse_blocks(value: Any) -> str | tuple[int, ...]:
    """``adapter.blocks`` in canonical form: "all", "last:k" (k >= 1) or a sorted tuple of indices."""
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if text == "all":
            return "all"
        head, sep, tail = text.partition(":")
        if head == "last" and sep and tail.isdigit() and int(tail) > 0:
            return f"last:{int(tail)}"
        if all(part.isdigit() for part in text.split(",")):  # "12,13" (how a sweep param prints)
            value = [int(part) for part in text.split(",")]
        else:
            raise ValueError(f"expected 'all', 'last:K' or a list of block indices, got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"expected 'all', 'last:K' or a non-empty list of block indices, got {value!r}")
    if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in value):
        raise ValueError(f"block indices must be integers >= 0, got {list(value)}")
    if len(set(value)) != len(value):
        raise ValueError(f"block indices repeat: {list(value)}")
    return tuple(sorted(value))


def block_indices(blocks: str | tuple[int, ...], depth: int, where: str = "adapter.blocks") -> list[int]:
    """The encoder block indices ``blocks`` selects in a ``depth``-block encoder (ConfigError if
    it asks for blocks the encoder does not have)."""
    if blocks == "all":
        return list(range(depth))
    if isinstance(blocks, str):
        k = int(blocks.split(":")[1])
        if k > depth:
            raise ConfigError(f"{where}: {blocks} asks for {k} blocks; this encoder has {depth}")
        return list(range(depth - k, depth))
    bad = [i for i in blocks if i >= depth]
    if bad:
        raise ConfigError(f"{where}: block {bad[0]} does not exist; this encoder has blocks 0..{depth - 1}")
    return list(blocks)


def blocks_label(blocks: str | tuple[int, ...]) -> str:
    """One scalar for params/reports: "all", "last:12" or "0,5,11"."""
    return blocks if isinstance(blocks, str) else ",".join(map(str, blocks))


class _AdapterBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    targets: tuple[str, ...] = ("q", "k", "v")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # Which encoder blocks get adapters: "all", "last:K" or a list of indices. Blocks before the
    # first task-specific one run once per image, shared by all tasks (mtsam/encoder.py).
    blocks: str | tuple[int, ...] = "all"
    # Freeze the LayerNorms of the blocks before the first adapted block, so that prefix has
    # nothing to train and runs without autograd (the official code trains every encoder norm).
    freeze_prefix_norms: bool = False

    @field_validator("blocks", mode="before")
    @classmethod
    def _blocks(cls, value: Any) -> str | tuple[int, ...]:
        return parse_blocks(value)

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
    freeze_prefix_norms: bool = False  # all encoder blocks' norms frozen: blocks run without autograd


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
