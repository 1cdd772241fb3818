"""MTAN/LibMTL training augmentation: random scale-crop and horizontal flip.

Works on one sample of channel-first tensors (the batch format of ``mtsam.data``):
image 3×H×W, semantic H×W int64 (−1 ignore), depth 1×H×W (0 invalid), normal 3×H×W (0 invalid).
Other keys are treated as dense targets: float C×H×W resized bilinearly, integer ones nearest.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

SCALES = (1.0, 1.2, 1.5)


def _resize(x: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    """Resize a C×H×W (or H×W) tensor to ``size``; integer tensors round-trip through float."""
    squeeze = x.dim() == 2
    y = x[None, None] if squeeze else x[None]
    kwargs = {"align_corners": True} if mode == "bilinear" else {}  # LibMTL uses align_corners=True
    y = F.interpolate(y.float() if not y.is_floating_point() else y, size=size, mode=mode, **kwargs)
    y = y[0, 0] if squeeze else y[0]
    return y.to(x.dtype)


NORMAL_MODES = ("renormalize", "bilinear")


def transform(
    sample: dict[str, Tensor], scale: float, top: int, left: int, flip: bool, normals: str = "renormalize"
) -> dict[str, Tensor]:
    """Deterministic part of ``augment``: crop (H/scale)×(W/scale) at (top, left), resize back, flip.

    ``normals``: "renormalize" (ours) or "bilinear" (the reference: resized as they are, no
    re-normalisation, validity = whatever is non-zero after resizing).
    """
    if normals not in NORMAL_MODES:
        raise ValueError(f"normals must be one of {NORMAL_MODES}, got {normals!r}")
    h, w = sample["image"].shape[-2:]
    crop = (int(h / scale), int(w / scale))
    if scale < 1.0 or not (0 <= top <= h - crop[0] and 0 <= left <= w - crop[1]):
        raise ValueError(f"crop {crop} at ({top}, {left}) does not fit a {h}×{w} image (scale {scale})")
    out = dict(sample) if scale == 1.0 else _scale_crop(sample, scale, top, left, crop, normals)
    if flip:
        out = {key: torch.flip(x, dims=[-1]) for key, x in out.items()}
        if "normal" in out:
            normal = out["normal"].clone()
            normal[0] = -normal[0]  # mirrored scene: x component of the surface normal flips
            out["normal"] = normal
    return out


def _scale_crop(
    sample: dict[str, Tensor], scale: float, top: int, left: int, crop: tuple[int, int], normals: str
) -> dict[str, Tensor]:
    size = tuple(sample["image"].shape[-2:])
    ch, cw = crop
    out = {}
    for key, x in sample.items():
        x = x[..., top : top + ch, left : left + cw]
        if key == "normal" and normals == "bilinear":
            x = _resize(x, size, "bilinear")  # the reference: shortened vectors stay, and stay valid
        elif key == "normal":
            # validity is resized like labels so all task masks agree; bilinear mixing with the
            # zero vectors of holes shortens normals, hence the re-normalisation
            valid = _resize((x != 0).any(0).float(), size, "nearest") > 0.5
            x = _resize(x, size, "bilinear")
            norm = x.norm(dim=0, keepdim=True)
            ok = valid & (norm[0] > 1e-6)
            x = torch.where(ok, x / norm.clamp_min(1e-6), torch.zeros_like(x))
        elif key == "depth":
            # zooming in by s brings the scene s times closer; 0 (invalid) stays 0
            x = _resize(x, size, "nearest") / scale
        elif key == "image" or x.is_floating_point():
            x = _resize(x, size, "bilinear")
        else:
            x = _resize(x, size, "nearest")
        out[key] = x
    return out


def augment(
    sample: dict[str, Tensor], rng: np.random.Generator, normals: str = "renormalize"
) -> dict[str, Tensor]:
    """Random scale s ∈ SCALES (crop H/s × W/s, resize back), then flip with p = 0.5.

    Returns a new dict with the same keys, shapes and dtypes; the input is not modified.
    """
    h, w = sample["image"].shape[-2:]
    scale = float(SCALES[rng.integers(len(SCALES))])  # draw order is part of the seeded contract
    ch, cw = int(h / scale), int(w / scale)
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return transform(sample, scale, top, left, flip=bool(rng.random() < 0.5), normals=normals)
