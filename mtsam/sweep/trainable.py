"""The Tune function trainable: one trial = one ``Trainer`` run, reported and checkpointed per epoch.

Reports go through ``BackgroundReporter``: the next epoch trains while the driver handles the last
one. A retried or resumed trial gets its last Tune checkpoint back and continues from it
(``resume_from``), so it re-reports from the next epoch on.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

from ray import tune

from mtsam.config import validate_config

from .params import param_name
from .reporting import BackgroundReporter
from .sampler import apply_params, flatten


def _link_or_copy(src: Path, dst: Path) -> None:
    # The trainer replaces its files atomically, so a hard link is a stable snapshot (no copy).
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


SCRATCH_PREFIX = "mtsam-trial-"


def scratch_dir() -> Path:
    """A trial's private folder in the temp dir, named after this host and process so that a
    later trial on the node can tell whether its owner is still alive (see ``remove_orphaned``)."""
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{socket.gethostname()}-{os.getpid()}-"))


def remove_orphaned(temp_dir: Path | None = None) -> list[Path]:
    """Delete trial folders whose process is gone: a SIGKILLed trial (driver killed, node lost, OOM
    killer) cannot clean up, and each folder holds a full training checkpoint (hundreds of MB at
    ViT-L). Only folders of this host name (a /tmp shared with other containers stays theirs)."""
    host = socket.gethostname()
    removed = []
    for folder in Path(temp_dir or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}{host}-*-*"):
        # "<pid>-<mkdtemp suffix>" (no "-" in the suffix); anything else is another host's name
        owner = re.fullmatch(r"(\d+)-[^-]+", folder.name[len(SCRATCH_PREFIX) + len(host) + 1 :])
        if owner is None or _alive(int(owner.group(1))):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def torch_version() -> str:
    import torch

    return f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}"


def describe_device(device) -> str:
    """``cpu`` or ``cuda:0 (NVIDIA H200)``: a run tag, so the MLflow UI shows where a trial trained."""
    import torch

    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def placement(run_config, cap_gpu_memory: bool) -> dict:
    """Where this trial runs (node, device, GPU ids, GPU share) as result fields; on a fractional GPU, caps
    the trial's CUDA memory at its share. A GPU that torch cannot see is an error: training on the
    CPU while Ray holds a GPU for the trial would be silently ~100x slower."""
    import ray

    from mtsam.device import cap_gpu_memory_to, pick_device
    from mtsam.errors import ConfigError

    context = ray.get_runtime_context()
    node_id = context.get_node_id()
    gpus = [str(g) for g in context.get_accelerator_ids().get("GPU", [])]
    device = pick_device(run_config.train.device)  # the trainer's choice, made the same way
    if gpus and run_config.train.device == "auto" and device.type != "cuda":
        raise ConfigError(
            f"resources.gpu: Ray gave this trial GPU {','.join(gpus)} on node {node_id[:12]} but "
            f"torch sees no CUDA device (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}"
            f", torch {torch_version()}); set base.train.device=cpu to train on the CPU anyway"
        )
    share = float(context.get_assigned_resources().get("GPU", 0.0))
    if cap_gpu_memory and 0 < share < 1 and device.type == "cuda":
        cap_gpu_memory_to(share, device)
    return {
        "node_id": node_id,
        "placement/device": describe_device(device),
        "placement/gpus": ",".join(gpus),
        "placement/gpu_share": f"{share:g}",
    }


def cost_metrics(run_config, device_type: str, cost: str | None) -> dict[str, float]:
    """The Pareto cost ``search.cost`` of this trial's config, from the meta-device counts; only
    the one a sweep minimises (a count takes ~0.1–3 s, too much to spend on every trial)."""
    if cost == "train_flops":
        from mtsam.flops import flops_for_config

        return {"model/train_gflops_per_image": round(flops_for_config(run_config) / 1e9, 3)}
    if cost == "peak_memory":
        from mtsam.memory_plan import GIB, estimate_for_config

        return {
            "model/est_peak_memory_gib": round(estimate_for_config(run_config, device_type).total / GIB, 4)
        }
    return {}


def run_trial(
    config: dict,
    trial_base: dict,
    sync_epochs: frozenset[int] = frozenset(),
    cap_gpu_memory: bool = True,
    gpu_memory_gb: float | None = None,
    cost: str | None = None,
    report_params: list[str] | tuple[str, ...] = (),
    workers: int = 1,
    worker_cpu: float = 1.0,
    worker_gpu: float = 0.0,
) -> None:
    """``config``: the sampled values (Ray's nested dict); ``trial_base``: the base run config with
    the baseline and selection metric already in; ``sync_epochs``: epochs after which the scheduler
    may stop the trial; ``cap_gpu_memory``: hold a fractional-GPU trial to its share of the card's
    memory (``resources.gpu_memory``); ``gpu_memory_gb``: one GPU's memory, to refuse a trial that
    cannot fit before it trains (``resources.gpu_memory_gb``); ``cost``: the Pareto cost to report
    (``search.cost``, None: none beyond the parameter counts); ``report_params``: space paths whose
    values this trial trains with go into every result as ``param/<name>`` (PBT / PB2 change them
    between epochs: Ray restarts the trial with the new config and another trial's checkpoint, which
    the trainer continues with the new values); ``workers`` > 1: the trial trains on that many Ray
    Train workers of ``worker_cpu`` / ``worker_gpu`` each (``mtsam.sweep.workers``); all passed
    with ``tune.with_parameters``."""
    import logging

    from mtsam.adapter_state import atomic_torch_save
    from mtsam.trainer import BEST_ADAPTER, CHECKPOINT, Trainer

    for name in ("ray.train", "ray.tune"):  # no "checkpoint created" / "restored" line per epoch
        logging.getLogger(name).setLevel(logging.WARNING)

    from mtsam.errors import NonFiniteError
    from mtsam.trainer import NonFiniteLoss

    # Divergence is deterministic: a retry would diverge again, so a retried trial that already
    # diverged fails at once with the original reason instead of training again.
    diverged = Path(tune.get_context().get_trial_dir()) / "diverged.txt"
    if diverged.is_file():
        raise NonFiniteLoss(diverged.read_text().strip())
    run_config = validate_config(apply_params(trial_base, flatten(config)))
    # A private scratch folder: the trial's working dir is synced to storage, checkpoints travel
    # through tune.report instead (once per epoch, to local disk or s3 alike).
    remove_orphaned()
    run_dir = scratch_dir()
    try:
        resume_from = None
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                for name in (CHECKPOINT, BEST_ADAPTER):
                    if (Path(folder) / name).is_file():
                        shutil.copy2(Path(folder) / name, run_dir / name)
            resume_from = run_dir
        sampled = flatten(config)
        params = {f"param/{param_name(p)}": sampled[p] for p in report_params if p in sampled}
        reporter = BackgroundReporter(sync_epochs)

        def report(record: dict, payload: dict, extra: dict) -> None:
            # A snapshot of this epoch's files: the trainer replaces them while the report is in flight.
            snapshot = Path(tempfile.mkdtemp(prefix="ckpt-", dir=run_dir))
            if (run_dir / BEST_ADAPTER).is_file():  # written by the trainer when the metric improves
                _link_or_copy(run_dir / BEST_ADAPTER, snapshot / BEST_ADAPTER)
            # Ray's own "timestamp" is whole seconds; timelines (benchmarks, analysis) need better.
            reporter.submit(
                {**record, **extra, **params, "reported_at": time.time()},
                snapshot,
                prepare=lambda: atomic_torch_save(payload, snapshot / CHECKPOINT),
            )

        if workers > 1:  # Ray Train workers; this trial only relays their epochs to Tune
            from .workers import run_workers

            try:
                run_workers(
                    run_config,
                    run_dir,
                    report,
                    reporter,
                    workers=workers,
                    cpu=worker_cpu,
                    gpu=worker_gpu,
                    sync_epochs=sync_epochs,
                    cost=cost,
                    trial_name=f"{tune.get_context().get_trial_id()}-{os.getpid()}",
                )
            except Exception as exc:
                if "NonFinite" in f"{exc!r}{exc}":  # a worker diverged: a retry would only repeat it
                    diverged.write_text(str(exc).strip().splitlines()[-1])
                raise
            finally:
                reporter.drain()
            return
        extra = placement(run_config, cap_gpu_memory)  # node_id, placement/*: in every result
        from mtsam.memory_plan import trial_capacity

        share = float(extra["placement/gpu_share"])
        capacity = trial_capacity(gpu_memory_gb, share, cap_gpu_memory)
        # Each epoch's training checkpoint is written by the reporter thread straight into the
        # snapshot Tune persists (~20 ms per epoch the training thread no longer waits for).
        pending: dict[str, dict] = {}

        def defer_write(payload: dict, path: Path) -> None:
            pending["checkpoint"] = payload

        trainer = Trainer(
            run_config,
            run_dir,
            callbacks=[lambda record, _trainer: report(record, pending.pop("checkpoint"), extra)],
            resume_from=resume_from,
            interrupt=reporter.check,
            write_checkpoint=defer_write,
            gpu_memory_bytes=capacity,
        )
        extra.update({f"model/{k}_params": v for k, v in trainer.model.parameter_summary().items()})
        extra.update(cost_metrics(run_config, trainer.device.type, cost))
        extra.update({"model/workers": 1, "model/global_batch": trainer.global_batch})
        try:
            trainer.fit()
        except (NonFiniteLoss, NonFiniteError) as exc:  # NaN predictions: a retry would only repeat it
            diverged.write_text(str(exc))
            raise
        finally:
            reporter.drain()  # the last report reaches Tune first; a stop from Tune wins over an error
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
