"""Metric meters and Δb against small hand-computed cases."""

import math

import pytest
import torch

from mtsam.errors import ConfigError
from mtsam.metrics import DepthMeter, NormalMeter, SegmentationMeter, delta_b


def _one_hot_logprobs(ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """B×H×W ids -> B×C×H×W log-probs whose argmax is ids."""
    one_hot = torch.nn.functional.one_hot(ids, num_classes).permute(0, 3, 1, 2).float()
    return (one_hot * 0.9 + 0.1 / num_classes).log()


SEG_TARGET = torch.tensor([[[0, 0, 1, -1], [2, 1, 1, 5]]])
SEG_PRED = torch.tensor([[[0, 1, 1, 2], [2, 1, 0, 0]]])
# valid pixels (−1 and 5 ignored), rows = gt: [[1,1,0],[1,2,0],[0,0,1]]
# IoU = 1/3, 2/4, 1/1; PixAcc = 4/6
SEG_MIOU = (1 / 3 + 0.5 + 1.0) / 3


def test_segmentation_confusion_with_ignore_labels():
    meter = SegmentationMeter(3)
    meter.update(_one_hot_logprobs(SEG_PRED, 3), SEG_TARGET)
    assert meter.confusion.tolist() == [[1, 1, 0], [1, 2, 0], [0, 0, 1]]
    result = meter.compute()
    assert list(result) == ["miou", "pix_acc"]
    assert result["miou"] == pytest.approx(SEG_MIOU)
    assert result["pix_acc"] == pytest.approx(4 / 6)


def test_segmentation_miou_only_over_present_classes():
    meter = SegmentationMeter(5)  # classes 3, 4 neither in gt nor predicted
    meter.update(SEG_PRED, SEG_TARGET)  # integer predictions are accepted too
    assert meter.compute()["miou"] == pytest.approx(SEG_MIOU)
    assert meter.per_class_iou()[3:].isnan().all()


def test_segmentation_pools_over_updates():
    whole, split = SegmentationMeter(3), SegmentationMeter(3)
    whole.update(SEG_PRED, SEG_TARGET)
    split.update(SEG_PRED[..., :2], SEG_TARGET[..., :2])
    split.update(SEG_PRED[..., 2:], SEG_TARGET[..., 2:])
    assert torch.equal(whole.confusion, split.confusion)


def test_depth_pooled_by_pixels_not_images():
    target = torch.zeros(2, 1, 2, 2)
    pred = torch.zeros(2, 1, 2, 2)
    target[0, 0, 0, 0], pred[0, 0, 0, 0] = 1.0, 2.0  # image 0: one valid pixel, error 1
    target[1, 0, :, :] = 2.0
    target[1, 0, 1, 1] = 0.0  # image 1: three valid pixels, error 0
    pred[1] = 2.0
    pred[1, 0, 1, 1] = 100.0  # invalid pixel: ignored
    meter = DepthMeter()
    meter.update(pred, target)
    result = meter.compute()
    assert result["abs_err"] == pytest.approx(1 / 4)  # a per-image mean would give (1 + 0) / 2
    assert result["rel_err"] == pytest.approx((1 / 1) / 4)


def _unit(deg: float) -> list[float]:
    r = math.radians(deg)
    return [0.0, math.sin(r), math.cos(r)]


def test_normal_angles_and_fractions():
    # pixels: 0°, 90°, 20°, 10° (unnormalised prediction), one invalid
    pred = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 0, 1], [0, 0, 2], [1, 0, 0]], dtype=torch.float32)
    gt = torch.tensor([[1, 0, 0], [0, 1, 0], _unit(20), _unit(10), [0, 0, 0]], dtype=torch.float32)
    pred, gt = pred.T.reshape(1, 3, 1, 5), gt.T.reshape(1, 3, 1, 5)  # 5 pixels in a row
    meter = NormalMeter()
    meter.update(pred[..., :2], gt[..., :2])  # two updates: pooled like one
    meter.update(pred[..., 2:], gt[..., 2:])
    result = meter.compute()
    assert list(result) == ["mean", "median", "within_11.25", "within_22.5", "within_30"]
    assert result["mean"] == pytest.approx(30.0, abs=1e-3)
    assert result["median"] == pytest.approx(15.0, abs=1e-3)
    assert result["within_11.25"] == pytest.approx(0.5)
    assert result["within_22.5"] == pytest.approx(0.75)
    assert result["within_30"] == pytest.approx(0.75)


def test_normal_zero_angle_is_exact():
    v = torch.nn.functional.normalize(torch.randn(2, 3, 4, 4), dim=1)
    meter = NormalMeter()
    meter.update(v, v)
    assert meter.compute()["mean"] == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize("meter", [SegmentationMeter(3), DepthMeter(), NormalMeter()])
def test_empty_meters_return_nan(meter):
    assert all(math.isnan(v) for v in meter.compute().values())


def test_meters_with_all_invalid_pixels_return_nan():
    seg, depth, normal = SegmentationMeter(3), DepthMeter(), NormalMeter()
    seg.update(torch.zeros(1, 3, 2, 2), torch.full((1, 2, 2), -1))
    depth.update(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    normal.update(torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2))
    for meter in (seg, depth, normal):
        assert all(math.isnan(v) for v in meter.compute().values())


DIRECTIONS = {"semantic": {"miou": True, "pix_acc": True}, "depth": {"abs_err": False}}
BASELINE = {"semantic": {"miou": 0.5, "pix_acc": 0.8}, "depth": {"abs_err": 0.5}}


def test_delta_b_task_and_metric_averaged():
    results = {"semantic": {"miou": 0.55, "pix_acc": 0.8}, "depth": {"abs_err": 0.6}}
    # gains: miou +10 %, pix_acc 0 %, abs_err −20 % (lower is better, it went up)
    out = delta_b(results, BASELINE, DIRECTIONS)
    assert out["delta_b_task"] == pytest.approx(100 * ((0.1 + 0.0) / 2 - 0.2) / 2)  # −7.5
    assert out["delta_b_metric"] == pytest.approx(100 * (0.1 + 0.0 - 0.2) / 3)  # −3.33


def test_delta_b_signs():
    better_lower = delta_b({"depth": {"abs_err": 0.4}}, BASELINE, DIRECTIONS)
    assert better_lower["delta_b_task"] == pytest.approx(20.0)
    worse_higher = delta_b({"semantic": {"miou": 0.4}}, BASELINE, DIRECTIONS)
    assert worse_higher["delta_b_task"] == pytest.approx(-20.0)
    assert delta_b(BASELINE, BASELINE, DIRECTIONS) == {"delta_b_task": 0.0, "delta_b_metric": 0.0}


def test_delta_b_errors():
    with pytest.raises(ConfigError, match="semantic/miou"):
        delta_b({"semantic": {"miou": 0.5}}, {"semantic": {"pix_acc": 0.8}}, DIRECTIONS)
    with pytest.raises(ConfigError, match="normal"):
        delta_b({"normal": {"mean": 20.0}}, BASELINE, DIRECTIONS)
    with pytest.raises(ConfigError, match="is 0"):
        delta_b({"depth": {"abs_err": 0.1}}, {"depth": {"abs_err": 0.0}}, DIRECTIONS)
