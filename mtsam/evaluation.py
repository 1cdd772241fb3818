"""Split evaluation (pooled meters, Δb vs an explicit baseline) and the best-epoch selection rule."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from .errors import ConfigError, NonFiniteError
from .metrics import delta_b
from .per_image import per_image_meters, per_image_results
from .tasks import Task


def directions(tasks: Mapping[str, Task]) -> dict[str, dict[str, bool]]:
    return {name: dict(task.metrics) for name, task in tasks.items()}


def selection_metric(config, tasks: Mapping[str, Task]) -> tuple[str, bool]:
    """(metric key, higher_is_better) that selects the best epoch.

    Default: validation Δb (task-averaged) when a baseline is configured, else the first metric of
    the first task. ``train.select_metric`` may name "delta_b_task", "delta_b_metric" or any
    "val/<task>/<metric>" key.
    """
    name = config.train.select_metric
    if name is None:
        if config.baseline:
            return "val/delta_b_task", True
        first = next(iter(tasks.values()))
        metric, higher = next(iter(first.metrics.items()))
        return f"val/{first.name}/{metric}", higher
    if name in ("delta_b_task", "delta_b_metric"):
        if not config.baseline:
            raise ConfigError(f"train.select_metric: {name} needs a baseline (set `baseline:`)")
        return f"val/{name}", True
    parts = name.removeprefix("val/").split("/")
    if len(parts) == 2 and parts[0] in tasks and parts[1] in tasks[parts[0]].metrics:
        return f"val/{parts[0]}/{parts[1]}", tasks[parts[0]].metrics[parts[1]]
    known = [f"val/{t}/{m}" for t, task in tasks.items() for m in task.metrics]
    raise ConfigError(
        f"train.select_metric: unknown metric {name!r} (known: delta_b_task, {', '.join(known)})"
    )


def check_baseline(baseline: Mapping | None, tasks: Mapping[str, Task]) -> None:
    """A configured baseline must cover every task and metric on both splits."""
    if baseline is None:
        return
    for split in ("val", "test"):
        if split not in baseline:
            raise ConfigError(f"baseline.{split}: missing (need single-task metrics for val and test)")
        for name, task in tasks.items():
            for metric in task.metrics:
                value = baseline[split].get(name, {}).get(metric)
                if value is None:
                    raise ConfigError(f"baseline.{split}.{name}.{metric}: missing")
                if value == 0:
                    raise ConfigError(f"baseline.{split}.{name}.{metric}: must be non-zero (relative gain)")


@torch.no_grad()
def evaluate(
    model,
    loader,
    tasks: Mapping[str, Task],
    split: str,
    baseline: Mapping | None,
    device: torch.device,
    autocast: Callable = None,
    per_image: bool = False,
    merge: Callable[[dict], None] | None = None,
) -> dict[str, float]:
    """Metrics pooled over the whole split: {"<split>/<task>/<metric>": v, "<split>/delta_b_*": v};
    with ``per_image`` also the reference's protocol as "<split>_per_image/<task>/<metric>".
    ``merge(meters)`` pools the meters of data-parallel workers (each saw a shard) before computing."""
    was_training = model.training
    model.eval()
    meters = {name: task.meter() for name, task in tasks.items()}
    image_meters = per_image_meters(tasks) if per_image else {}
    names = list(tasks)
    try:
        for batch in loader:
            images = batch["image"].to(device)
            with autocast() if autocast else torch.autocast("cpu", enabled=False):
                if len(names) == len(model.task_names):
                    outputs = model(images)
                else:
                    outputs = {t: model.forward_task(images, t) for t in names}
            for t in names:
                try:
                    pred = outputs[t].float().cpu()
                    meters[t].update(pred, batch[t])
                    if t in image_meters:
                        image_meters[t].update(pred, batch[t])
                except NonFiniteError as err:  # say which split: it is never a result
                    raise NonFiniteError(f"{split} evaluation: {err}") from None
    finally:
        model.train(was_training)
    if merge is not None:
        merge(meters)
        merge(image_meters)
    results = {t: meters[t].compute() for t in names}
    flat = {f"{split}/{t}/{m}": float(v) for t, ms in results.items() for m, v in ms.items()}
    if baseline is not None:
        for key, value in delta_b(results, baseline[split], directions(tasks)).items():
            flat[f"{split}/{key}"] = value
    if per_image:
        flat.update(per_image_results(split, results, image_meters))
    return flat
