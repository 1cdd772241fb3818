"""One MTSAM training step, as the trainer does it, for the model-level benchmarks (p2, p3).

``ours_step`` mirrors ``Trainer.train_epoch`` for one batch (grad_accum 1): stacked forward in bf16
autocast on CUDA (``precision``), per-task losses in float32, the weighting's backward, the orthogonality
regulariser once per step (ToRA only), optimiser + scheduler step, ``zero_grad(set_to_none)``.
Data loading is left out: it is the same for every design and not what is compared here.
``reference_step`` is the same step with the reference design's forward/backward
(``benchmarks.reference``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmarks.reference import reference_backward
from benchmarks.timing import count_flops
from mtsam import build_mtsam
from mtsam.adapters import orthogonality_loss
from mtsam.config import TrainSection
from mtsam.device import autocast_for
from mtsam.optim import build_optimizer, build_scheduler
from mtsam.tasks import build_tasks
from mtsam.weighting import build_weighting

TASKS = {"semantic": 13, "depth": 1, "normal": 3}  # NYUv2
WEIGHTS = [1, 1, 4]  # the reference run's fixed task weights


@dataclass
class StepSetup:
    model: torch.nn.Module
    tasks: dict
    weighting: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    shared: list
    lam: float
    batch: dict
    device: torch.device
    precision: str = "auto"

    def autocast(self):
        return autocast_for(self.device, self.precision)()


def make_batch(size: int, height: int, width: int, device: torch.device, seed: int = 0) -> dict:
    """A synthetic NYUv2-like batch with invalid pixels in every target (masks are exercised)."""
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(-1, TASKS["semantic"], (size, height, width), generator=g)
    depth = torch.rand(size, 1, height, width, generator=g) * 5
    depth[..., : height // 8, :] = 0  # invalid band
    normal = torch.nn.functional.normalize(torch.randn(size, 3, height, width, generator=g), dim=1)
    normal[..., :, : width // 8] = 0
    batch = {
        "image": torch.rand(size, 3, height, width, generator=g),
        "semantic": label,
        "depth": depth,
        "normal": normal,
    }
    return {k: v.to(device) for k, v in batch.items()}


def build_setup(
    variant: str,
    image_size: int,
    adapter: dict,
    batch_size: int,
    hw: tuple[int, int],
    device: torch.device,
    seed: int = 0,
    heads: dict | None = None,
    precision: str = "auto",
    activation_checkpointing: bool = False,
) -> StepSetup:
    """Model (same frozen weights for every adapter, via ``seed``), optimiser, weighting and batch."""
    model = build_mtsam(variant, TASKS, adapter, image_size=image_size, seed=seed, heads=heads)
    model = model.to(device).train().set_activation_checkpointing(activation_checkpointing)
    train = TrainSection()
    weighting = build_weighting("fixed", list(TASKS), weights=WEIGHTS).to(device)
    optimizer = build_optimizer(train, model, weighting)
    scheduler = build_scheduler(train, optimizer, 1000)
    has_tora = any(n.endswith(".U1") for n, _ in model.named_parameters())
    return StepSetup(
        model=model,
        tasks=build_tasks(TASKS),
        weighting=weighting,
        optimizer=optimizer,
        scheduler=scheduler,
        shared=model.shared_parameters(),
        lam=train.ortho_weight if has_tora else 0.0,
        batch=make_batch(batch_size, *hw, device, seed),
        device=device,
        precision=precision,
    )


def ours_backward(s: StepSetup) -> torch.Tensor:
    """The product's path: all tasks in one stacked encoder pass, one backward. (T,) losses."""
    images = s.batch["image"]
    with s.autocast():
        outputs = s.model(images)
    losses = torch.stack([s.tasks[t].loss(outputs[t].float(), s.batch[t]) for t in s.model.task_names])
    if not torch.isfinite(losses).all():  # the trainer checks too (a device sync on CUDA)
        raise FloatingPointError("non-finite loss in benchmark step")
    s.weighting.backward(losses, s.shared)
    return losses.detach()


def finish_step(s: StepSetup, losses: torch.Tensor) -> None:
    """Orthogonality regulariser, optimiser and scheduler step, zero_grad — as the trainer."""
    if s.lam > 0:
        (s.lam * orthogonality_loss(s.model)).backward()
    s.optimizer.step()
    s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    s.weighting.after_step(losses)
    losses.float().cpu()  # the trainer's running sums (a device sync on CUDA)


def ours_step(s: StepSetup) -> None:
    finish_step(s, ours_backward(s))


def reference_step(s: StepSetup) -> None:
    finish_step(s, reference_backward(s))


def step_flops(backward, s: StepSetup) -> int:
    """FLOPs of one forward+backward of ``backward`` (see ``timing.count_flops``); grads discarded."""
    flops = count_flops(lambda: backward(s))
    s.optimizer.zero_grad(set_to_none=True)
    return flops
