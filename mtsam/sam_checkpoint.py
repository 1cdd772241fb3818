"""Load official SAM checkpoints (``sam_vit_{b,l,h}_*.pth`` layout) into a SAM of any image size.

When the model's image size differs from the checkpoint's, the absolute ``pos_embed`` is resized
bicubically and the global-attention ``rel_pos`` tables linearly, so training at 512 px costs
~4× less than at 1024 px. Windowed blocks' tables depend only on the window and stay as they are.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import CheckpointError
from .variants import VARIANTS

# Checkpoints this process has read, by (path, size, mtime). They are memory-mapped, so the cache
# holds page-cache pages the OS shares and can reclaim, not a private copy: a reused Ray actor
# starts its next trial without re-reading 1.2 GB (ViT-L) or unpickling it again.
_mapped: dict[str, tuple[tuple[int, int], dict[str, torch.Tensor]]] = {}  # path → (size, mtime), state


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The checkpoint's SAM state dict (read-only use: tensors may be shared with later calls)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: file not found")
    stat, key = path.stat(), str(path.resolve())
    version = (stat.st_size, stat.st_mtime_ns)
    if key in _mapped and _mapped[key][0] == version:
        return _mapped[key][1]
    try:
        try:
            state, mapped = torch.load(path, map_location="cpu", weights_only=True, mmap=True), True
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            # written by torch < 1.6 (not a zip archive): cannot be mapped, so read it whole
            state, mapped = torch.load(path, map_location="cpu", weights_only=True), False
    except (
        RuntimeError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        EOFError,
        OSError,
        ValueError,
        KeyError,
        IndexError,
    ) as exc:  # truncated pickles fail in many ways
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path}: not a readable torch file ({reason[:160]})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # some re-saves wrap the state dict
    if not isinstance(state, dict) or not any(str(k).startswith("image_encoder.") for k in state):
        raise CheckpointError(f"checkpoint {path}: not a SAM checkpoint (no image_encoder.* weights)")
    if mapped:
        _mapped[key] = (version, state)
    return state


def _guess_variant(state: dict[str, torch.Tensor]) -> str | None:
    pos = state.get("image_encoder.pos_embed")
    depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
    for name, spec in VARIANTS.items():
        if pos is not None and pos.shape[-1] == spec.embed_dim and depth == spec.depth:
            return name
    return None


def _resize_pos_embed(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, g, g, C) → (1, grid, grid, C), bicubic."""
    out = F.interpolate(
        pos.permute(0, 3, 1, 2).float(), size=(grid, grid), mode="bicubic", align_corners=False
    )
    return out.permute(0, 2, 3, 1).to(pos.dtype)


def _resize_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    """(L, C) → (length, C), linear (as segment-anything's get_rel_pos does on the fly)."""
    out = F.interpolate(table.t()[None].float(), size=length, mode="linear", align_corners=False)
    return out[0].t().to(table.dtype)


def adapt_to_image_size(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict:
    """Resize size-dependent encoder tensors of ``state`` to the shapes in ``target``."""
    state = dict(state)
    key = "image_encoder.pos_embed"
    if key in state and key in target and state[key].shape != target[key].shape:
        src, dst = state[key], target[key]
        if src.shape[-1] == dst.shape[-1]:
            state[key] = _resize_pos_embed(src, dst.shape[1])
    for name, value in list(state.items()):
        same_width = name in target and value.shape[1:] == target[name].shape[1:]
        if ".attn.rel_pos_" in name and same_width and value.shape != target[name].shape:
            state[name] = _resize_rel_pos(value, target[name].shape[0])
    return state


def load_sam_weights(sam: nn.Module, path: str | Path, variant: str) -> None:
    """Load a SAM-format checkpoint into ``sam`` (a ``Sam`` built for ``variant``), strictly."""
    state = read_state_dict(path)
    target = sam.state_dict()
    state = adapt_to_image_size(state, target)
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
        for k in target
        if k in state and state[k].shape != target[k].shape
    ]
    if missing or unexpected or mismatched:
        guess = _guess_variant(state)
        looks = f" (it looks like {guess})" if guess and guess != variant else ""
        first = (mismatched + [f"missing {k}" for k in missing] + [f"unexpected {k}" for k in unexpected])[:3]
        raise CheckpointError(
            f"checkpoint {path} does not match variant {variant}{looks}: " + "; ".join(first)
        )
    sam.load_state_dict(state)
