"""Adapter-only checkpoints: the trainable tensors plus the config that rebuilds the model.

Loading goes through ``torch.load(weights_only=True)``; the payload is plain tensors and
builtins, carries a format version and is validated before anything is loaded.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .build import build_from_config
from .errors import CheckpointError
from .model import MTSAM

FORMAT = "mtsam-adapter"
FORMAT_VERSION = 1


def trainable_state(model: MTSAM) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """Write to a temp file beside ``path`` and rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def adapter_payload(model: MTSAM, extra: dict | None = None) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.build_config,
        "state": trainable_state(model),
        "extra": extra or {},
    }


def save_adapter(model: MTSAM, path: str | Path, extra: dict | None = None) -> Path:
    """Save only what trains (adapter, norms, no-mask table, decoders) + the build config."""
    return atomic_torch_save(adapter_payload(model, extra), path)


def load_format(path: str | Path, fmt: str, kind: str) -> dict:
    """``torch.load(weights_only=True)`` of an MTSAM file whose ``format`` is ``fmt``; errors name
    the ``kind`` of file ("adapter checkpoint", "training checkpoint") and its path."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{kind} {path}: file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise CheckpointError(f"{kind} {path}: not readable ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise CheckpointError(f"{kind} {path}: not an MTSAM {kind}")
    return payload


def read_adapter(path: str | Path) -> dict:
    """Load and validate an adapter checkpoint without building a model."""
    payload = load_format(path, FORMAT, "adapter checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"adapter checkpoint {path}: format version {payload.get('format_version')} "
            f"(this MTSAM reads {FORMAT_VERSION})"
        )
    if not isinstance(payload.get("config"), dict) or not isinstance(payload.get("state"), dict):
        raise CheckpointError(f"adapter checkpoint {path}: missing config or state")
    return payload


def load_trainable(model: MTSAM, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Copy trainable tensors into ``model``; every trainable parameter must be present with its shape."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = [n for n in params if n not in state]
    unexpected = [n for n in state if n not in params]
    bad = [n for n in params if n in state and state[n].shape != params[n].shape]
    if missing or unexpected or bad:
        first = (bad + missing + unexpected)[:3]
        raise CheckpointError(f"{source}: does not match the model (first: {', '.join(first)})")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state[n].to(p.device, p.dtype))


def load_adapter(path: str | Path, checkpoint: str | Path | None = None) -> tuple[MTSAM, dict]:
    """Rebuild the model from the file's config and load its tensors; returns (model, extra)."""
    payload = read_adapter(path)
    model = build_from_config(payload["config"], checkpoint=checkpoint)
    load_trainable(model, payload["state"], source=f"adapter checkpoint {path}")
    return model, payload["extra"]
