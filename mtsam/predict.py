"""``python -m mtsam.predict``: per-task outputs of a trained adapter on image files.

Writes, per input image ``NAME``: ``NAME_semantic.png`` (colour-mapped classes), ``NAME_depth.png``,
``NAME_normal.png`` and the raw ``NAME_<task>.npy`` arrays. Inputs: PNG/JPEG files or ``.npy``
arrays in the MTAN image layout (H×W×3 floats in [0, 1]).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from .cli_common import Parser, run_cli
from .device import PRECISIONS, autocast_for, pick_device
from .errors import CheckpointError, DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def build_parser() -> Parser:
    p = Parser(prog="python -m mtsam.predict", description=__doc__)
    p.add_argument(
        "--checkpoint", required=True, help="a run directory (uses best_adapter.pt) or an adapter .pt file"
    )
    p.add_argument("--images", required=True, nargs="+", help="image files (.png/.jpg or MTAN .npy)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--sam-checkpoint", help="SAM .pth if the one recorded in the adapter moved")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="auto: bf16 on CUDA")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def load_image(path: Path) -> torch.Tensor:
    """(3, H, W) float in [0, 1]; DataError naming the file for anything else."""
    if not path.is_file():
        raise DataError(f"image {path}: file not found")
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, allow_pickle=False).astype(np.float32)
            if array.ndim != 3 or array.shape[-1] != 3:
                raise DataError(f"image {path}: expected an H×W×3 array, got shape {array.shape}")
            if array.max() > 1.0:
                array = array / 255.0
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            from PIL import Image

            with Image.open(path) as img:
                array = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        else:
            raise DataError(
                f"image {path}: unsupported file type {path.suffix or '(none)'} "
                f"(expected {', '.join(sorted(IMAGE_SUFFIXES | {'.npy'}))})"
            )
        if not np.isfinite(array).all():
            bad = int((~np.isfinite(array)).sum())
            raise DataError(
                f"image {path}: {bad} non-finite pixel value(s) (NaN/inf); expected finite values"
            )
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - every unreadable file is the same user error
        raise DataError(f"image {path}: cannot read as an image ({type(exc).__name__})") from None
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)


def _palette(n: int) -> np.ndarray:
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return (np.array([cmap(i % 20)[:3] for i in range(n)]) * 255).astype(np.uint8)


def render(task: str, head: str, pred: np.ndarray) -> np.ndarray:
    """(C, H, W) prediction → (H, W, 3) uint8 picture."""
    if head == "log_softmax":
        return _palette(pred.shape[0])[pred.argmax(0)]
    if pred.shape[0] == 3:
        return ((np.clip(pred.transpose(1, 2, 0), -1, 1) + 1) * 127.5).astype(np.uint8)
    import matplotlib

    x = pred[0]
    lo, hi = np.percentile(x, 1), np.percentile(x, 99)
    norm = np.clip((x - lo) / (hi - lo + 1e-8), 0, 1)
    return (matplotlib.colormaps["viridis"](norm)[..., :3] * 255).astype(np.uint8)


def main_args(args) -> int:
    from PIL import Image

    from .adapter_state import load_adapter
    from .trainer import BEST_ADAPTER

    ckpt = Path(args.checkpoint)
    if ckpt.is_dir():
        ckpt = ckpt / BEST_ADAPTER
    if not ckpt.is_file():
        raise CheckpointError(f"--checkpoint: {ckpt} not found (give a run directory or an adapter .pt)")
    images = {Path(p): load_image(Path(p)) for p in args.images}  # validate every input before writing
    model, _ = load_adapter(ckpt, checkpoint=args.sam_checkpoint)
    device = pick_device(args.device, "--device")
    autocast = autocast_for(device, args.precision)
    model = model.to(device).eval()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".predict-", dir=out))
    try:
        with torch.no_grad():
            for path, image in images.items():
                with autocast():
                    preds = model(image[None].to(device))
                for task, pred in preds.items():
                    array = pred[0].float().cpu().numpy()
                    np.save(staging / f"{path.stem}_{task}.npy", array)
                    Image.fromarray(render(task, model.heads[task], array)).save(
                        staging / f"{path.stem}_{task}.png"
                    )
        for f in staging.iterdir():
            f.replace(out / f.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {2 * len(images) * len(model.task_names)} files for {len(images)} image(s) to {out}")
    return 0


def main(argv=None) -> int:
    return run_cli(main_args, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
