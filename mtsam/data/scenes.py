"""Procedural indoor scenes in the MTAN NYUv2 ``.npy`` layout (numpy only).

A pinhole camera (OpenCV frame: x right, y down, z forward) with a small random pitch/yaw looks
into a box-shaped room (floor, ceiling, back/left/right walls) holding a few spheres and
axis-aligned boxes. Ray casting gives mutually consistent arrays: image H×W×3 in [0, 1] (Lambert
shading + ambient + noise), label H×W (floor 0, walls 1, ceiling 2, objects in [3, C)), z-depth
H×W×1 in metres and camera-frame unit normals H×W×3 facing the camera. Random holes mark pixels
invalid in label (−1), depth (0) and normal (0) alike, like the sensor gaps of the real data.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from mtsam.errors import ConfigError, DataError, MTSAMError

RENDER_VERSION = 1  # bump when the images change so cached datasets are re-rendered
DEFAULTS = {"train": 64, "val": 16, "height": 288, "width": 384, "num_classes": 13, "seed": 0}
FLOOR, WALL, CEILING = 0, 1, 2
# first scene index of each split: the test set stays the same whatever the train size
SPLIT_OFFSET = {"train": 0, "val": 1_000_000}
FOCAL_RANGE = (0.8, 1.1)  # focal length in pixels, as a fraction of the image width


def _palette(num_classes: int, seed: int) -> np.ndarray:
    """Albedo per class, C×3, fixed for a dataset (independent of the sample index)."""
    rng = np.random.default_rng([seed, 7919])
    colours = rng.uniform(0.25, 0.95, size=(num_classes, 3))
    colours[[FLOOR, WALL, CEILING]] = [[0.55, 0.42, 0.30], [0.80, 0.78, 0.72], [0.92, 0.92, 0.95]]
    return colours


def _rotation(pitch: float, yaw: float) -> np.ndarray:
    """Camera-to-world rotation (3×3): yaw about y, then pitch about x."""
    cp, sp, cy, sy = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return r_yaw @ r_pitch


def _check_params(height: int, width: int, num_classes: int, seed: int) -> None:
    if height < 8 or width < 8:
        raise ConfigError(f"image size must be at least 8×8, got {height}×{width}")
    if num_classes < 4:
        raise ConfigError(f"num_classes must be >= 4 (floor, wall, ceiling + objects), got {num_classes}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")


def _draw_focal(rng: np.random.Generator, width: int) -> float:
    return float(rng.uniform(*FOCAL_RANGE)) * width  # must stay the first draw of a sample's rng


def focal_length(index: int, seed: int, width: int) -> float:
    """Pinhole focal length (pixels, fx = fy) of sample ``index``; principal point = image centre.

    Pixel (row y, column x) looks along (x + 0.5 − W/2, y + 0.5 − H/2, f) in the camera frame.
    """
    return _draw_focal(np.random.default_rng([seed, index]), width)


def render_scene(index: int, seed: int, height: int, width: int, num_classes: int) -> dict[str, np.ndarray]:
    """Render sample ``index`` of the dataset ``seed``; deterministic per (seed, index).

    Returns {"image": H×W×3 float32 in [0,1], "label": H×W int16 (−1 = invalid),
    "depth": H×W×1 float32 metres (0 = invalid), "normal": H×W×3 float32 unit (0 = invalid)}.
    """
    _check_params(height, width, num_classes, seed)
    if index < 0:
        raise ConfigError(f"index must be >= 0, got {index}")
    rng = np.random.default_rng([seed, index])
    h, w = height, width

    # rays with unit z in the camera frame, so the hit distance t *is* the z-depth
    f = _draw_focal(rng, w)
    u = (np.arange(w) + 0.5 - w / 2) / f
    v = (np.arange(h) + 0.5 - h / 2) / f
    d_cam = np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((1, 1))), axis=-1)  # H×W×3
    rot = _rotation(pitch=rng.uniform(-0.25, 0.05), yaw=rng.uniform(-0.3, 0.3))
    d = d_cam @ rot.T  # world-frame directions, H×W×3

    # room: camera at the origin, y down (floor at +y)
    floor_y, ceil_y = rng.uniform(1.2, 1.7), -rng.uniform(1.0, 1.6)
    left_x, right_x = -rng.uniform(1.8, 3.0), rng.uniform(1.8, 3.0)
    back_z = rng.uniform(5.5, 9.0)

    hits: list[np.ndarray] = []  # per surface: t (H×W), inf where missed
    normals: list[np.ndarray] = []  # per surface: world normal, 3 or H×W×3
    labels: list[int] = []
    albedo_jitter: list[np.ndarray] = []
    with np.errstate(divide="ignore", invalid="ignore"):
        planes = [
            (1, floor_y, FLOOR),
            (1, ceil_y, CEILING),
            (2, back_z, WALL),
            (0, left_x, WALL),
            (0, right_x, WALL),
        ]
        for axis, offset, label in planes:
            t = offset / d[..., axis]
            hits.append(np.where(t > 1e-6, t, np.inf))
            n = np.zeros(3)
            n[axis] = -np.sign(offset)  # planes face the camera at the origin
            normals.append(n)
            labels.append(label)
            albedo_jitter.append(np.zeros(3))

        for _ in range(rng.integers(1, 4)):  # spheres, resting on the floor or floating
            r = rng.uniform(0.3, 0.8)
            c = np.array([rng.uniform(left_x + r, right_x - r), 0.0, rng.uniform(2.5, back_z - r)])
            c[1] = floor_y - r if rng.random() < 0.7 else rng.uniform(ceil_y + r, floor_y - r)
            b = d @ c  # ray (t·d) vs sphere |p − c| = r: t²|d|² − 2t d·c + |c|² − r² = 0
            a = (d * d).sum(-1)
            disc = b * b - a * (c @ c - r * r)
            t = (b - np.sqrt(disc)) / a
            t = np.where((disc > 0) & (t > 1e-6), t, np.inf)
            hits.append(t)
            normals.append((t[..., None] * d - c) / r)
            labels.append(int(rng.integers(3, num_classes)))
            albedo_jitter.append(rng.uniform(-0.08, 0.08, 3))

        for _ in range(rng.integers(1, 4)):  # axis-aligned boxes standing on the floor
            size = rng.uniform([0.4, 0.3, 0.4], [1.4, 1.3, 1.2])
            lo = np.array(
                [
                    rng.uniform(left_x, right_x - size[0]),
                    floor_y - size[1],
                    rng.uniform(2.5, back_z - size[2]),
                ]
            )
            hi = lo + size
            t1, t2 = lo / d, hi / d  # slab method, ray origin at 0
            t_near_axes = np.minimum(t1, t2)
            t_near = t_near_axes.max(-1)
            t_far = np.maximum(t1, t2).min(-1)
            t = np.where((t_near <= t_far) & (t_near > 1e-6), t_near, np.inf)
            axis = t_near_axes.argmax(-1)
            n = -np.sign(d) * (np.arange(3) == axis[..., None])
            hits.append(t)
            normals.append(n)
            labels.append(int(rng.integers(3, num_classes)))
            albedo_jitter.append(rng.uniform(-0.08, 0.08, 3))

    t_all = np.stack(hits)  # S×H×W
    nearest = t_all.argmin(0)
    depth = np.take_along_axis(t_all, nearest[None], 0)[0]
    if not np.isfinite(depth).all():  # cannot happen in a closed room; guard against bugs
        raise RuntimeError("renderer produced rays that hit nothing")

    normal_w = np.zeros((h, w, 3))
    for s, n in enumerate(normals):
        sel = nearest == s
        normal_w[sel] = n[sel] if n.ndim == 3 else n
    label = np.asarray(labels)[nearest]
    palette = _palette(num_classes, seed)
    albedo = np.clip(palette[label] + np.asarray(albedo_jitter)[nearest], 0.0, 1.0)

    # Lambert from a point light under the ceiling, plus ambient; no shadows (cheap, still shaded)
    point = depth[..., None] * d
    light = np.array([rng.uniform(left_x / 2, right_x / 2), ceil_y + 0.2, rng.uniform(1.5, back_z / 2)])
    to_light = light - point
    dist = np.linalg.norm(to_light, axis=-1, keepdims=True)
    lambert = np.clip((normal_w * to_light).sum(-1, keepdims=True) / dist, 0.0, None)
    shade = rng.uniform(0.2, 0.35) + rng.uniform(0.8, 1.1) * lambert * np.minimum(1.0, 6.0 / dist)
    image = albedo * shade + rng.normal(0.0, 0.02, size=(h, w, 3))
    image = np.clip(image, 0.0, 1.0)

    normal_c = normal_w @ rot  # world -> camera: R^T n, row-vector form
    normal_c /= np.linalg.norm(normal_c, axis=-1, keepdims=True)

    invalid = _holes(rng, h, w)
    label = np.where(invalid, -1, label)
    depth = np.where(invalid, 0.0, depth)
    normal_c[invalid] = 0.0
    return {
        "image": image.astype(np.float32),
        "label": label.astype(np.int16),
        "depth": depth[..., None].astype(np.float32),
        "normal": normal_c.astype(np.float32),
    }


def _holes(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """H×W bool mask of 1–4 random rectangles/ellipses (sensor gaps)."""
    yy, xx = np.mgrid[0:h, 0:w]
    mask = np.zeros((h, w), dtype=bool)
    for _ in range(rng.integers(1, 5)):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.03, 0.12) * h + 1, rng.uniform(0.03, 0.12) * w + 1
        if rng.random() < 0.5:
            mask |= (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
        else:
            mask |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    return mask


def _params(train: int, val: int, height: int, width: int, num_classes: int, seed: int) -> dict:
    if not (1 <= train <= SPLIT_OFFSET["val"] and val >= 0):
        limit = SPLIT_OFFSET["val"]
        raise ConfigError(f"need 1 <= train <= {limit} and val >= 0, got train={train} val={val}")
    _check_params(height, width, num_classes, seed)
    return {
        "version": RENDER_VERSION,
        "train": int(train),
        "val": int(val),
        "height": int(height),
        "width": int(width),
        "num_classes": int(num_classes),
        "seed": int(seed),
    }


def write_dataset(
    out: str | os.PathLike,
    train: int = DEFAULTS["train"],
    val: int = DEFAULTS["val"],
    height: int = DEFAULTS["height"],
    width: int = DEFAULTS["width"],
    num_classes: int = DEFAULTS["num_classes"],
    seed: int = DEFAULTS["seed"],
) -> Path:
    """Render ``out/{train,val}/{image,label,depth,normal}/{i}.npy`` plus ``out/scenes.json``.

    Rendered into a temporary sibling directory and renamed into place, so ``out`` is either absent,
    the previous complete dataset, or the new complete one. Train and val are disjoint scene index
    ranges (SPLIT_OFFSET) of the same seed. An existing ``out`` is replaced only if it is empty or a
    previous render.
    """
    params = _params(train, val, height, width, num_classes, seed)
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise DataError(f"refusing to overwrite {out}: not a directory")
    if out.exists() and any(out.iterdir()) and not (out / "scenes.json").is_file():
        raise DataError(f"refusing to overwrite {out}: not empty and not a rendered scenes dataset")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would make the renamed dataset private
        for split, n in (("train", train), ("val", val)):
            for folder in ("image", "label", "depth", "normal"):
                (tmp / split / folder).mkdir(parents=True)
            for i in range(n):
                sample = render_scene(SPLIT_OFFSET[split] + i, seed, height, width, num_classes)
                for folder, array in sample.items():
                    np.save(tmp / split / folder / f"{i}.npy", array)
        # metadata last: its presence marks a complete render
        (tmp / "scenes.json").write_text(json.dumps(params, indent=2) + "\n")
        _swap_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _swap_into_place(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, old / "data")
    try:
        os.rename(tmp, out)
    except OSError:
        if old is not None:  # put the previous dataset back rather than leave nothing
            os.rename(old / "data", out)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def read_params(out: str | os.PathLike) -> dict | None:
    """Parameters of the rendered dataset at ``out`` (from scenes.json), or None if absent/corrupt."""
    try:
        return json.loads((Path(out) / "scenes.json").read_text())
    except (OSError, ValueError):
        return None


def ensure_dataset(out: str | os.PathLike, **params) -> Path:
    """Render the dataset at ``out`` unless a complete one with the same parameters is there.

    ``params``: any of train, val, height, width, num_classes, seed (DEFAULTS otherwise). Safe to
    call from several processes at once (Ray trials): a lock file serialises the render.
    """
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown scene parameter(s) {sorted(unknown)} (known: {sorted(DEFAULTS)})")
    full = {**DEFAULTS, **params}
    wanted = _params(**full)
    out = Path(out).absolute()
    if read_params(out) == wanted:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if read_params(out) != wanted:  # another process may have rendered it meanwhile
                write_dataset(out, **full)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"error: {message}\n")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m mtsam.data.scenes", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output dataset directory")
    parser.add_argument("--train", type=_positive, default=DEFAULTS["train"], help="train samples")
    parser.add_argument("--val", type=_non_negative, default=DEFAULTS["val"], help="val (test) samples")
    parser.add_argument("--height", type=_positive, default=DEFAULTS["height"])
    parser.add_argument("--width", type=_positive, default=DEFAULTS["width"])
    parser.add_argument("--classes", type=_positive, default=DEFAULTS["num_classes"], help="class count")
    parser.add_argument("--seed", type=_non_negative, default=DEFAULTS["seed"])
    args = parser.parse_args(argv)
    try:
        out = write_dataset(args.out, args.train, args.val, args.height, args.width, args.classes, args.seed)
    except (MTSAMError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
