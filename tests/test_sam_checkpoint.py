"""Loading SAM-format checkpoints (saved with segment-anything's own classes) into MTSAM."""

import pytest
import torch

from mtsam import build_mtsam, sam_registry
from mtsam.errors import CheckpointError
from mtsam.variants import build_sam

TASKS = {"semantic": 4, "depth": 1, "normal": 3}


@pytest.fixture(scope="module")
def sam_ckpt(tmp_path_factory):
    torch.manual_seed(7)
    sam = build_sam("tiny")
    with torch.no_grad():  # make every tensor distinctive (SAM zero-inits pos/rel_pos)
        for p in sam.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    path = tmp_path_factory.mktemp("ckpt") / "sam_tiny.pth"
    torch.save(sam.state_dict(), path)
    return path, sam


def test_official_layout_loads_into_mtsam(sam_ckpt):
    path, sam = sam_ckpt
    model = build_mtsam("tiny", TASKS, {"type": "tora", "ranks": [4, 4, 2]}, checkpoint=path)
    vector = sam.prompt_encoder.no_mask_embed.weight[0]
    assert model.no_mask.shape == (8, vector.numel())
    assert all(torch.equal(row, vector) for row in model.no_mask)
    for task in TASKS:
        ours = model.decoders[task].state_dict()
        for k, v in sam.mask_decoder.state_dict().items():
            assert torch.equal(ours[k], v), (task, k)
    enc = model.image_encoder.state_dict()
    assert torch.equal(enc["blocks.0.attn.qkv.base.weight"], sam.image_encoder.blocks[0].attn.qkv.weight)
    assert torch.equal(enc["pos_embed"], sam.image_encoder.pos_embed)
    assert torch.equal(
        model.pe_layer.positional_encoding_gaussian_matrix,
        sam.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix,
    )


def test_registry_builder_loads_checkpoint(sam_ckpt):
    path, sam = sam_ckpt
    again = sam_registry["tiny"](checkpoint=str(path))
    assert torch.equal(again.image_encoder.neck[0].weight, sam.image_encoder.neck[0].weight)


def test_image_size_interpolation(sam_ckpt):
    path, sam = sam_ckpt
    model = build_mtsam("tiny", TASKS, None, checkpoint=path, image_size=64)
    assert model.image_encoder.pos_embed.shape == (1, 4, 4, 96)
    glob = model.image_encoder.blocks[1].attn  # tiny's global block
    assert glob.rel_pos_h.shape[0] == 2 * 4 - 1
    expected = torch.nn.functional.interpolate(
        sam.image_encoder.pos_embed.permute(0, 3, 1, 2), size=(4, 4), mode="bicubic", align_corners=False
    ).permute(0, 2, 3, 1)
    torch.testing.assert_close(model.image_encoder.pos_embed, expected)
    # Windowed blocks keep their (window-sized) tables untouched.
    assert torch.equal(
        model.image_encoder.blocks[0].attn.rel_pos_h, sam.image_encoder.blocks[0].attn.rel_pos_h
    )
    out = model(torch.rand(1, 3, 48, 64))
    assert out["depth"].shape == (1, 1, 48, 64)


def test_wrong_variant_and_non_sam_files_fail_clearly(sam_ckpt, tmp_path):
    path, _ = sam_ckpt
    with pytest.raises(
        CheckpointError, match=r"does not match variant small \(it looks like tiny\).*image_encoder"
    ):
        build_mtsam("small", TASKS, None, checkpoint=path)
    junk = tmp_path / "notes.pth"
    junk.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pth: not a readable torch file"):
        build_mtsam("tiny", TASKS, None, checkpoint=junk)
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="not a SAM checkpoint"):
        build_mtsam("tiny", TASKS, None, checkpoint=other)
    truncated = tmp_path / "trunc.pth"
    truncated.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="trunc.pth"):
        build_mtsam("tiny", TASKS, None, checkpoint=truncated)
    with pytest.raises(CheckpointError, match="file not found"):
        build_mtsam("tiny", TASKS, None, checkpoint=tmp_path / "missing.pth")


def test_checkpoint_is_read_once_per_process_until_it_changes(sam_ckpt, tmp_path):
    """Reused Ray actors build a model per trial: the (memory-mapped) file is read once, and read
    again when it is replaced."""
    from mtsam.sam_checkpoint import read_state_dict

    path, sam = sam_ckpt
    copy = tmp_path / "sam.pth"
    copy.write_bytes(path.read_bytes())
    first = read_state_dict(copy)
    assert read_state_dict(copy) is first
    changed = {k: v + 1 for k, v in sam.state_dict().items()}
    torch.save(changed, copy)
    again = read_state_dict(copy)
    key = "image_encoder.patch_embed.proj.weight"
    assert again is not first and torch.equal(again[key], changed[key])
    model = build_mtsam("tiny", TASKS, None, checkpoint=copy, image_size=64)
    assert torch.equal(model.image_encoder.patch_embed.proj.weight, changed[key])
