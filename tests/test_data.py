"""Scene renderer, MTAN loaders and augmentation, on small datasets rendered into tmp_path."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mtsam.data import CityScapes, NYUv2, scenes, train_val_split
from mtsam.data.augment import augment, transform
from mtsam.errors import ConfigError, DataError

H, W, C = 48, 64, 13
SMALL = {"train": 2, "val": 1, "height": 16, "width": 24, "num_classes": 5}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def nyu_root(tmp_path_factory) -> Path:
    return scenes.write_dataset(
        tmp_path_factory.mktemp("data") / "nyu", train=6, val=3, height=H, width=W, num_classes=C, seed=0
    )


@pytest.fixture
def copy(nyu_root, tmp_path) -> Path:
    """A private copy of the fixture dataset that a test may break."""
    return Path(shutil.copytree(nyu_root, tmp_path / "nyu"))


def _valid(s: dict) -> np.ndarray:
    return s["depth"][..., 0] > 0


# ---------------------------------------------------------------- renderer


def test_render_is_deterministic_per_seed():
    a, b = scenes.render_scene(3, 0, H, W, C), scenes.render_scene(3, 0, H, W, C)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["image"], scenes.render_scene(3, 1, H, W, C)["image"])
    assert not np.array_equal(a["image"], scenes.render_scene(4, 0, H, W, C)["image"])


@pytest.mark.parametrize("index", [0, 1, 2])
def test_render_ranges_and_consistent_masks(index):
    s = scenes.render_scene(index, 0, H, W, C)
    assert s["image"].shape == (H, W, 3) and s["image"].dtype == np.float32
    assert s["label"].shape == (H, W) and s["depth"].shape == (H, W, 1) and s["normal"].shape == (H, W, 3)
    assert s["image"].min() >= 0.0 and s["image"].max() <= 1.0 and s["image"].std() > 0.05
    valid = _valid(s)
    assert 0 < valid.sum() < H * W  # holes exist, most pixels are valid
    assert np.array_equal(valid, s["label"] >= 0)
    assert np.array_equal(valid, np.abs(s["normal"]).sum(-1) > 0)
    assert set(np.unique(s["label"][valid])) <= set(range(C)) and {0, 1} <= set(np.unique(s["label"]))
    assert s["depth"][valid].min() > 0.5 and s["depth"][valid].max() < 15.0
    assert np.allclose(np.linalg.norm(s["normal"][valid], axis=-1), 1.0, atol=1e-5)


def _points(s: dict, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera rays (H×W×3, unit z) and back-projected 3D points of a rendered sample."""
    f = scenes.focal_length(index, 0, W)
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    rays = np.stack([(xs - W / 2) / f, (ys - H / 2) / f, np.ones((H, W))], axis=-1)
    return rays, rays * s["depth"]


@pytest.mark.parametrize("index", [0, 5])
def test_render_geometry_is_physical(index):
    s = scenes.render_scene(index, 0, H, W, C)
    rays, points = _points(s, index)
    valid = _valid(s)
    # every visible surface faces the camera
    assert ((s["normal"] * rays).sum(-1)[valid] < 1e-4).all()
    # the floor is one plane: constant normal n and constant n·P over its pixels
    floor = s["label"] == scenes.FLOOR
    n = s["normal"][floor]
    assert np.allclose(n, n[0], atol=1e-5)
    offsets = (points[floor] * n[0]).sum(-1)
    assert np.ptp(offsets) < 1e-3 * np.abs(offsets).mean()


def test_render_speed_full_resolution():
    times = []
    for index in range(2):
        start = time.perf_counter()
        scenes.render_scene(index, 0, 288, 384, 13)
        times.append(time.perf_counter() - start)
    assert min(times) < 0.6  # budget is 0.2 s on an idle core; generous for a shared CI machine


def test_write_dataset_layout(nyu_root):
    for split, n in (("train", 6), ("val", 3)):
        for folder in ("image", "label", "depth", "normal"):
            names = sorted(p.name for p in (nyu_root / split / folder).iterdir())
            assert names == [f"{i}.npy" for i in range(n)]
    assert scenes.read_params(nyu_root)["train"] == 6
    # train and val are disjoint scene ranges of the same seed; val does not depend on the train size
    val0 = np.load(nyu_root / "val" / "image" / "0.npy")
    assert np.array_equal(val0, scenes.render_scene(scenes.SPLIT_OFFSET["val"], 0, H, W, C)["image"])
    assert oct(nyu_root.stat().st_mode & 0o777) == "0o755"


def test_interrupted_render_leaves_old_dataset_and_no_debris(tmp_path, monkeypatch):
    out = scenes.write_dataset(tmp_path / "d", **SMALL)
    before = scenes.read_params(out)
    real, calls = scenes.render_scene, []

    def flaky(*args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt  # like Ctrl-C half-way
        return real(*args)

    monkeypatch.setattr(scenes, "render_scene", flaky)
    with pytest.raises(KeyboardInterrupt):
        scenes.ensure_dataset(out, **{**SMALL, "train": 3})
    assert scenes.read_params(out) == before and len(list((out / "train" / "image").iterdir())) == 2
    with pytest.raises(KeyboardInterrupt):
        calls.clear()
        scenes.write_dataset(tmp_path / "fresh", **SMALL)
    assert not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".d.lock", "d"]  # no temp dirs left


def test_ensure_dataset_reuses_and_rerenders(tmp_path, monkeypatch):
    out = scenes.ensure_dataset(tmp_path / "c", **SMALL)
    with monkeypatch.context() as m:
        m.setattr(scenes, "write_dataset", lambda *a, **k: pytest.fail("re-rendered an up-to-date dataset"))
        assert scenes.ensure_dataset(tmp_path / "c", **SMALL) == out
    scenes.ensure_dataset(out, **{**SMALL, "seed": 1})
    assert scenes.read_params(out)["seed"] == 1
    with pytest.raises(ConfigError, match="colour"):
        scenes.ensure_dataset(out, colour=3)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="refusing"):
        scenes.ensure_dataset(tmp_path / "mine", **SMALL)


def test_cli_module_runs(tmp_path):
    # one real subprocess (each pays the package import); argument errors are checked in-process
    args = [
        "--out",
        str(tmp_path / "cli"),
        "--train",
        "2",
        "--val",
        "1",
        "--height",
        "16",
        "--width",
        "24",
        "--classes",
        "5",
        "--seed",
        "3",
    ]
    ok = subprocess.run(
        [sys.executable, "-m", "mtsam.data.scenes", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert scenes.read_params(tmp_path / "cli")["seed"] == 3
    assert len(list((tmp_path / "cli" / "val" / "depth").iterdir())) == 1


@pytest.mark.parametrize(
    "bad", [["--train", "0"], ["--height", "big"], ["--classes", "2"], ["--seed", "-1"], None]
)
def test_cli_bad_arguments_exit_2(tmp_path, capsys, bad):
    out = tmp_path / "x"
    argv = ["--out", str(out), *bad] if bad else []
    if bad == ["--classes", "2"]:  # passes argparse, rejected by the renderer
        assert scenes.main(argv) == 2
    else:
        with pytest.raises(SystemExit) as info:
            scenes.main(argv)
        assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1, err
    assert not out.exists()


def test_cli_refuses_foreign_directory(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    assert scenes.main(["--out", str(tmp_path), "--train", "1", "--height", "8", "--width", "8"]) == 2
    assert "refusing" in capsys.readouterr().err and (tmp_path / "notes.txt").exists()


# ---------------------------------------------------------------- loaders


def test_nyuv2_samples_match_rendered_arrays(nyu_root):
    ds = NYUv2(nyu_root, "train")
    assert len(ds) == 6 and len(NYUv2(nyu_root, "val")) == 3
    sample = ds[2]
    assert set(sample) == {"image", "semantic", "depth", "normal"}
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, H, W)
    assert sample["semantic"].dtype == torch.int64 and sample["semantic"].shape == (H, W)
    assert sample["depth"].dtype == torch.float32 and sample["depth"].shape == (1, H, W)
    assert sample["normal"].dtype == torch.float32 and sample["normal"].shape == (3, H, W)
    raw = scenes.render_scene(2, 0, H, W, C)
    assert np.array_equal(sample["normal"].numpy(), raw["normal"].transpose(2, 0, 1))
    assert np.array_equal(sample["semantic"].numpy(), raw["label"])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["depth"].shape == (4, 1, H, W)


def test_task_subset_and_indices(nyu_root):
    ds = NYUv2(nyu_root, "train", tasks=("depth",), indices=[4, 1])
    assert len(ds) == 2 and set(ds[0]) == {"image", "depth"}
    assert torch.equal(ds[1]["image"], NYUv2(nyu_root, "train")[1]["image"])
    with pytest.raises(DataError, match="out of range"):
        NYUv2(nyu_root, "train", indices=[6])


def test_cityscapes_layout_prefers_label_7(copy):
    for split in ("train", "val"):
        (copy / split / "label").rename(copy / split / "label_7")
        shutil.rmtree(copy / split / "normal")
    decoy = copy / "train" / "label"  # a second label folder must lose against label_7
    decoy.mkdir()
    for i in range(6):
        np.save(decoy / f"{i}.npy", np.zeros((H, W), np.float32))
    ds = CityScapes(copy, "train")
    sample = ds[0]
    assert set(sample) == {"image", "semantic", "depth"}
    assert np.array_equal(sample["semantic"].numpy(), np.load(copy / "train" / "label_7" / "0.npy"))
    assert CityScapes(copy, "train", label_dir="label")[0]["semantic"].abs().sum() == 0
    assert len(CityScapes(copy, "val")) == 3


def test_train_val_split():
    train, val = train_val_split(20, 0.25, seed=1)
    assert (train, val) == train_val_split(20, 0.25, seed=1)
    assert len(val) == 5 and not set(train) & set(val) and sorted(train + val) == list(range(20))
    assert val != train_val_split(20, 0.25, seed=2)[1]
    assert train_val_split(3, 0.0, seed=0) == ([0, 1, 2], [])
    assert len(train_val_split(3, 0.01, seed=0)[1]) == 1
    with pytest.raises(ConfigError):
        train_val_split(10, 1.0, seed=0)


# ---------------------------------------------------------------- augmentation


def test_flip_matches_manual_flip(nyu_root):
    s = NYUv2(nyu_root, "train")[0]
    out = transform(s, 1.0, 0, 0, flip=True)
    for key in ("image", "semantic", "depth"):
        assert torch.equal(out[key], s[key].flip(-1)), key
    expected = s["normal"].flip(-1)
    expected[0] *= -1
    assert torch.equal(out["normal"], expected)
    assert torch.equal(transform(s, 1.0, 0, 0, flip=False)["image"], s["image"])


@pytest.mark.parametrize("scale", [1.2, 1.5])
def test_scale_divides_depth_and_keeps_labels(nyu_root, scale):
    s = NYUv2(nyu_root, "train")[1]
    s["depth"] = torch.where(s["depth"] > 0, 2.0, 0.0)  # constant depth with the holes kept
    out = transform(s, scale, top=3, left=5, flip=False)
    valid = out["depth"][0] > 0
    assert torch.allclose(out["depth"][0][valid], torch.tensor(2.0 / scale))
    assert out["semantic"].dtype == torch.int64
    assert set(out["semantic"].unique().tolist()) <= set(s["semantic"].unique().tolist())
    assert torch.equal(valid, out["semantic"] >= 0) and torch.equal(valid, out["normal"].abs().sum(0) > 0)
    assert torch.allclose(out["normal"].norm(dim=0)[valid], torch.tensor(1.0), atol=1e-5)
    # nearest resize keeps the crop's top-left label
    assert out["semantic"][0, 0] == s["semantic"][3, 5]


def test_random_augment_invariants(nyu_root):
    s = NYUv2(nyu_root, "train")[2]
    for seed in range(6):
        out = augment(s, np.random.default_rng(seed))
        kinds = {k: (v.shape, v.dtype) for k, v in out.items()}
        assert kinds == {k: (v.shape, v.dtype) for k, v in s.items()}
        valid = out["depth"][0] > 0
        assert torch.equal(valid, out["semantic"] >= 0) and torch.equal(valid, out["normal"].abs().sum(0) > 0)


def test_dataset_augmentation_seeded_by_seed_epoch_index(nyu_root):
    ds = NYUv2(nyu_root, "train", augment=True, seed=0)
    first = [ds[i]["image"] for i in range(len(ds))]
    assert all(torch.equal(a, ds[i]["image"]) for i, a in enumerate(first))
    ds.set_epoch(1)
    assert any(not torch.equal(a, ds[i]["image"]) for i, a in enumerate(first))
    ds.set_epoch(0)
    assert torch.equal(first[0], ds[0]["image"])
    # same draws whatever the worker count (workers copy the dataset, epoch included)
    ds.set_epoch(1)
    batches = [
        torch.cat([b["image"] for b in torch.utils.data.DataLoader(ds, batch_size=2, num_workers=n)])
        for n in (0, 2)
    ]
    assert torch.equal(*batches)


# ---------------------------------------------------------------- broken datasets


def test_missing_root_split_and_folder(copy):
    with pytest.raises(DataError, match="nowhere"):
        NYUv2(copy / "nowhere", "train")
    with pytest.raises(DataError, match="test"):
        NYUv2(copy, "test")
    shutil.rmtree(copy / "train" / "normal")
    with pytest.raises(DataError, match=str(copy / "train" / "normal")):
        NYUv2(copy, "train")
    assert len(NYUv2(copy, "train", tasks=("semantic", "depth"))) == 6


def test_missing_index_file_is_named(copy):
    (copy / "train" / "depth" / "3.npy").unlink()
    with pytest.raises(DataError, match=f"missing file: {copy / 'train' / 'depth' / '3.npy'}"):
        NYUv2(copy, "train")


def test_corrupt_npy_is_named(copy):
    path = copy / "train" / "label" / "2.npy"
    path.write_bytes(b"\x93NUMPY garbage")
    ds = NYUv2(copy, "train")  # structure is fine; content is checked on load
    with pytest.raises(DataError, match=f"cannot read {path}"):
        ds[2]


@pytest.mark.parametrize(
    ("folder", "shape", "expected"),
    [
        ("depth", (10, 10, 1), f"{H}×{W}×1 or {H}×{W}"),
        ("normal", (H, W), f"{H}×{W}×3"),
        ("image", (H, W, 4), "H×W×3"),
    ],
)
def test_wrong_shape_is_named(copy, folder, shape, expected):
    path = copy / "train" / folder / "1.npy"
    np.save(path, np.ones(shape, np.float32))
    with pytest.raises(DataError, match=str(path)) as info:
        NYUv2(copy, "train")[1]
    assert "×".join(map(str, shape)) in str(info.value) and expected in str(info.value)


def test_verify_rereads_only_changed_files(copy, monkeypatch):
    """A reused Ray actor verifies the same data once; a file that changed since is checked again."""
    NYUv2(copy, "train").verify()
    reads = []
    original = NYUv2._load
    monkeypatch.setattr(NYUv2, "_load", lambda self, *a, **k: reads.append(a) or original(self, *a, **k))
    NYUv2(copy, "train").verify()
    assert reads == []  # unchanged: nothing re-read
    path = copy / "train" / "depth" / "1.npy"
    np.save(path, np.ones((10, 10, 1), np.float32))
    with pytest.raises(DataError, match=str(path)):
        NYUv2(copy, "train").verify()
