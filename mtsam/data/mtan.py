"""Loaders for the MTAN/LibMTL preprocessed ``.npy`` releases (NYUv2, CityScapes).

Layout: ``root/{train,val}/{image,label|label_7,depth,normal}/{i}.npy`` with i = 0..N−1; the MTAN
"val" folder is the test set (carve a validation subset from train with ``train_val_split``).
A sample is {"image": 3×H×W float32 in [0,1], "semantic": H×W int64 (−1 ignore),
"depth": 1×H×W float32 (0 invalid), "normal": 3×H×W float32 (0 invalid)}, only requested tasks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mtsam.data.augment import augment as augment_sample
from mtsam.errors import ConfigError, DataError

LABEL_DIRS = ("label_7", "label")  # auto-detect order: CityScapes' 7-class labels first
# expected trailing shape per folder kind (H, W come from the image); None = no channel axis
_CHANNELS = {"image": (3,), "semantic": (None,), "depth": (1, None), "normal": (3,)}


# Files this process has verified, by (path, size, mtime): a reused Ray actor runs many trials on
# the same data and re-reads no headers (NYUv2's 5.8 k files: about a second per trial).
_verified: set[int] = set()


def _scan(folder: Path) -> set[int]:
    return {int(p.stem) for p in folder.glob("*.npy") if p.stem.isdigit()}


class MTANDataset(Dataset):
    """One split of an MTAN-layout dataset.

    Args:
        root: dataset root holding ``train/`` and ``val/``.
        split: split folder name ("train" or "val"; "val" is the MTAN test set).
        tasks: task names; semantic → label folder, any other task → folder of the same name.
        augment: apply the MTAN scale-crop/flip augmentation (training only).
        indices: subset of sample ids (default: all), e.g. from ``train_val_split``.
        label_dir: semantic folder name; default auto-detects "label_7" then "label".
        seed: augmentation seed; each (seed, epoch, index) draws its own random numbers, so runs
            are reproducible whatever the DataLoader worker count.
        normal_augment: "renormalize" (ours) or "bilinear" (the reference's resize of normals).

    Structure (folders, contiguous ids) is checked here; file contents are checked on load.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        tasks: Sequence[str] = ("semantic", "depth", "normal"),
        augment: bool = False,
        indices: Sequence[int] | None = None,
        label_dir: str | None = None,
        seed: int = 0,
        normal_augment: str = "renormalize",
    ):
        if isinstance(tasks, str) or not tasks:
            raise ConfigError(f"tasks must be a non-empty sequence of names, got {tasks!r}")
        if len(set(tasks)) != len(tasks) or "image" in tasks:
            raise ConfigError(f"task names must be unique and not 'image', got {list(tasks)}")
        self.root = Path(root)
        self.split = split
        self.tasks = tuple(tasks)
        self.augment = augment
        self.normal_augment = normal_augment  # "renormalize" | "bilinear" (mtsam.data.augment)
        self.seed = seed
        self.epoch = 0
        if not self.root.is_dir():
            raise DataError(f"dataset root not found: {self.root}")
        split_dir = self.root / split
        if not split_dir.is_dir():
            found = sorted(p.name for p in self.root.iterdir() if p.is_dir())
            raise DataError(f"split folder not found: {split_dir} (found: {', '.join(found) or 'nothing'})")
        self.folders = {"image": split_dir / "image"}
        for task in self.tasks:
            self.folders[task] = split_dir / self._folder_name(split_dir, task, label_dir)
        for folder in self.folders.values():
            if not folder.is_dir():
                raise DataError(f"folder not found: {folder}")
        self.num_samples = self._check_indices()
        if indices is None:
            self.indices = list(range(self.num_samples))
        else:
            self.indices = [int(i) for i in indices]
            bad = [i for i in self.indices if not 0 <= i < self.num_samples]
            if bad:
                raise DataError(f"indices {bad[:5]} out of range: {split_dir} has {self.num_samples} samples")

    @staticmethod
    def _folder_name(split_dir: Path, task: str, label_dir: str | None) -> str:
        if task != "semantic":
            return task
        if label_dir is not None:
            return label_dir
        for name in LABEL_DIRS:
            if (split_dir / name).is_dir():
                return name
        return LABEL_DIRS[-1]  # reported as missing by the caller

    def _check_indices(self) -> int:
        """Number of samples N; every folder must hold exactly 0..N−1 (names the first gap)."""
        found = {key: _scan(folder) for key, folder in self.folders.items()}
        n = max((max(ids) + 1 for ids in found.values() if ids), default=0)
        if n == 0:
            raise DataError(f"no samples (*.npy) in {self.folders['image'].parent}")
        for key, ids in found.items():
            if len(ids) != n:
                missing = min(set(range(n)) - ids)
                raise DataError(f"missing file: {self.folders[key] / f'{missing}.npy'}")
        return n

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of this epoch (call before each epoch's iterator)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def verify(self) -> None:
        """Check every file of this split now (headers only, memory-mapped: ~1 ms a file), so a
        truncated or wrong-shape array fails before training starts rather than hours into it.
        Files unchanged since this process last verified them are not read again."""
        signature = self._signature()
        if signature in _verified:
            return
        for index in self.indices:
            hw = self._load("image", index, None, mmap=True).shape[:2]
            for task in self.tasks:
                self._load(task, index, hw, mmap=True)
        if signature is not None:
            _verified.add(signature)

    def _signature(self) -> int | None:
        stats = []
        for index in self.indices:
            for key in ("image", *self.tasks):
                path = self.folders[key] / f"{index}.npy"
                try:
                    st = path.stat()
                except OSError:
                    return None  # a missing file: the full check names it
                stats.append((str(path), st.st_size, st.st_mtime_ns))
        return hash(tuple(stats))

    def _load(self, key: str, index: int, hw: tuple[int, int] | None, mmap: bool = False) -> np.ndarray:
        """Load one array as H×W×C (C=1 for semantic/depth), checking its shape."""
        path = self.folders[key] / f"{index}.npy"
        try:
            array = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
        except Exception as exc:  # any unreadable file (truncated, pickled, not .npy) is a data problem
            raise DataError(f"cannot read {path}: {exc}") from exc
        channels = _CHANNELS.get(key)
        shape = array.shape
        ok = array.ndim in (2, 3) and (hw is None or shape[:2] == hw)
        if ok and channels is not None:
            c = shape[2] if array.ndim == 3 else None
            ok = c in channels
        if not ok or array.size == 0:
            h, w = hw if hw is not None else ("H", "W")
            expected = " or ".join(
                f"{h}×{w}" + (f"×{c}" if c is not None else "") for c in (channels or (None, "C"))
            )
            found = "×".join(map(str, shape))
            raise DataError(f"bad array shape in {path}: found {found}, expected {expected}")
        return array if array.ndim == 3 else array[..., None]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        index = self.indices[i]
        image = self._load("image", index, None)
        hw = image.shape[:2]
        if image.dtype == np.uint8:  # some re-exports store 0..255 bytes
            image = image.astype(np.float32) / 255.0
        if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
            # a NaN pixel makes the model output NaN: fail naming the file, never a quiet metric
            path = self.folders["image"] / f"{index}.npy"
            bad = int((~np.isfinite(image)).sum())
            raise DataError(
                f"image {path}: {bad} non-finite pixel value(s) (NaN/inf); expected finite values"
            )
        sample = {"image": _to_tensor(image.astype(np.float32))}
        for task in self.tasks:
            array = self._load(task, index, hw)
            if task == "semantic":
                # out-of-range ids (incl. −1, 255) are kept: losses and meters ignore them
                sample[task] = torch.from_numpy(_finite_int(array[..., 0]))
            else:
                # a NaN in depth/normal would poison losses: treat it as invalid (0)
                sample[task] = _to_tensor(
                    np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
                )
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            sample = augment_sample(sample, rng, self.normal_augment)
        return sample


def _to_tensor(array: np.ndarray) -> Tensor:
    """H×W×C numpy -> C×H×W contiguous tensor."""
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _finite_int(array: np.ndarray) -> np.ndarray:
    if np.issubdtype(array.dtype, np.floating):
        array = np.where(np.isfinite(array), array, -1)
    return array.astype(np.int64)


class NYUv2(MTANDataset):
    """NYUv2 (MTAN release): 13 classes + depth + normals, 288×384; tasks default to all three."""


class CityScapes(MTANDataset):
    """CityScapes (MTAN release): 7 classes (label_7) + inverse depth, 128×256."""

    def __init__(
        self, root: str | os.PathLike, split: str, tasks: Sequence[str] = ("semantic", "depth"), **kw
    ):
        super().__init__(root, split, tasks=tasks, **kw)


def train_val_split(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic random split of ids 0..n−1 into (train, validation), both sorted.

    A non-zero fraction gives at least one validation sample and keeps at least one for training.
    """
    if n < 1:
        raise ConfigError(f"cannot split {n} samples")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = 0 if val_fraction == 0 else min(max(1, round(n * val_fraction)), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())
