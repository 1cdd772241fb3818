"""A trial on N data-parallel workers: Ray Train's ``TorchTrainer`` started inside the Tune trial.

This is the pattern Ray documents for Train inside Tune (Ray ≥ 2.43, Train v2): the Tune function
trainable is the driver of one Ray Train run. Here:

- ``ScalingConfig(num_workers=N, resources_per_worker=...)``: Ray Train reserves the N workers as
  one placement group, so a trial starts with all of its workers or waits (never half-started);
  the Tune trial itself holds only ``DRIVER_CPU`` (it trains nothing).
- Every worker runs the same ``Trainer`` with ``parallel=DataParallel`` (``mtsam.distributed``:
  sharded data, all-reduced gradients, pooled metrics); gloo on CPU, NCCL on CUDA.
- Rank 0 sends each epoch's record, training checkpoint and (when it changed) best adapter to the
  trial through a ``ray.util.queue.Queue``; the trial reports them to Tune exactly as a one-worker
  trial does (``BackgroundReporter``), so MLflow gets one child run per trial and each epoch once.
  Train's own ``TuneReportCallback`` hands Tune a checkpoint *path* in Train's storage instead of a
  Tune checkpoint, which the retries, PBT and the MLflow tracker here are built on.
- Where the scheduler may stop the trial (``sync_epochs``) rank 0 waits for the trial's answer;
  a stop asked elsewhere reaches rank 0 after its next epoch. Rank 0 sets ``trainer.stop`` and
  every worker ends after that epoch (the trainer agrees on it in one collective).
- ``FailureConfig(max_failures=0)`` for Train: a lost worker fails the Train run and so the Tune
  trial, which Tune retries from its last checkpoint (``max_failures``) like any other trial.
- Resume on any N: the checkpoint holds the (identical) trainable weights and optimiser state once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from pathlib import Path

DRIVER_CPU = 0.1  # the Tune trial's own share while its workers train
STOP, GO = "stop", "go"
PLACEMENT_GROUP = "placement/group"  # not reported: run_workers removes it from the record


def worker_resources(cpu: float, gpu: float) -> dict[str, float]:
    return {"CPU": cpu, **({"GPU": gpu} if gpu else {})}


def trial_reservation(workers: int, cpu: float, gpu: float) -> dict[str, float]:
    """All a trial holds while it trains: its N workers plus the driver's share."""
    return {"CPU": workers * cpu + DRIVER_CPU, "GPU": workers * gpu}


def trials_that_fit(cluster: dict, workers: int, cpu: float, gpu: float) -> int:
    """How many such trials the cluster's CPUs and GPUs hold at once (0: not even one)."""
    need = trial_reservation(workers, cpu, gpu)
    fits = [int(cluster.get(k, 0.0) // v) for k, v in need.items() if v > 0]
    return min(fits) if fits else 0


def check_fits(plan, cluster: dict) -> int:
    """The number of trials to run at once: ``search.max_concurrent``, lowered to what the
    cluster holds when a trial has several workers (a trial whose workers cannot be placed waits
    on Ray Train and times out); a cluster too small for one trial is refused with one line."""
    from mtsam.errors import ConfigError

    res, wanted = plan.config.resources, plan.config.search.max_concurrent
    if res.workers == 1:
        return wanted
    fit = trials_that_fit(cluster, res.workers, res.cpu, res.gpu)
    if fit == 0:
        need = trial_reservation(res.workers, res.cpu, res.gpu)
        raise ConfigError(
            f"resources.workers: one trial of {res.workers} workers needs {need['CPU']:g} CPUs and "
            f"{need['GPU']:g} GPUs but the Ray cluster has {cluster.get('CPU', 0):g} CPUs and "
            f"{cluster.get('GPU', 0):g} GPUs"
        )
    return min(wanted, fit)


def _read_files(folder: Path, names) -> dict[str, bytes]:
    return {n: (folder / n).read_bytes() for n in names if (folder / n).is_file()}


def _worker_loop(cfg: dict) -> None:
    """One Ray Train worker: the whole ``Trainer.fit`` on this worker's shard."""
    import ray
    import ray.train
    import torch
    from ray.util.queue import Empty

    from mtsam.config import validate_config
    from mtsam.distributed import DataParallel
    from mtsam.trainer import BEST_ADAPTER, Trainer

    from .trainable import cost_metrics, remove_orphaned, scratch_dir

    torch.set_num_threads(max(1, int(cfg["cpu"])))
    if torch.cuda.is_available() and cfg["gpu"]:
        import ray.train.torch

        torch.cuda.set_device(ray.train.torch.get_device())  # Train's choice among the node's GPUs
    rank = ray.train.get_context().get_world_rank()
    run_config = validate_config(cfg["run_config"])
    remove_orphaned()
    run_dir = scratch_dir()
    try:
        resume_from = None
        if cfg["resume"] is not None:
            for name, data in ray.get(cfg["resume"][0]).items():
                (run_dir / name).write_bytes(data)
            resume_from = run_dir
        parallel = DataParallel.from_process_group()
        records, replies = cfg["records"], cfg["replies"]
        pending: dict = {}
        state = {"best_epoch": None, "info": None}

        def send(record: dict, trainer) -> None:
            if state["info"] is None:  # once: what the trial reports in every result
                info = {f"model/{k}_params": v for k, v in trainer.model.parameter_summary().items()}
                info.update(cost_metrics(run_config, trainer.device.type, cfg["cost"]))
                info["model/workers"], info["model/global_batch"] = trainer.world, trainer.global_batch
                state["info"] = info
            best = None
            if trainer.best is not None and trainer.best["epoch"] != state["best_epoch"]:
                state["best_epoch"] = trainer.best["epoch"]
                best = (run_dir / BEST_ADAPTER).read_bytes()
            records.put((record, pending.pop("checkpoint"), best, {**state["info"], **where}))
            if record["epoch"] in cfg["sync_epochs"]:
                trainer.stop = replies.get() == STOP
            else:
                with contextlib.suppress(Empty):  # a stop Tune asked for since the last epoch
                    trainer.stop = replies.get_nowait() == STOP

        trainer = Trainer(
            run_config,
            run_dir,
            callbacks=[send] if rank == 0 else [],
            resume_from=resume_from,
            write_checkpoint=lambda payload, path: pending.__setitem__("checkpoint", payload),
            parallel=parallel,
        )
        where = _placement(parallel.gather(_where_am_i(trainer.device)))
        trainer.fit()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _where_am_i(device) -> tuple[str, str, str]:
    import ray

    from .trainable import describe_device

    context = ray.get_runtime_context()
    gpus = ",".join(str(g) for g in context.get_accelerator_ids().get("GPU", []))
    return context.get_node_id(), describe_device(device), gpus


def _placement(where: list[tuple[str, str, str]]) -> dict[str, str]:
    """The placement result fields (MLflow tags) of a data-parallel trial, one entry per worker
    in rank order: ``node_id`` lists each node once, device and GPU ids per worker; and the id of
    the workers' placement group (``PLACEMENT_GROUP``, for the trial's own clean-up)."""
    import ray

    nodes = list(dict.fromkeys(node for node, _, _ in where))
    group = ray.util.get_current_placement_group()
    return {
        PLACEMENT_GROUP: group.id.hex() if group is not None else "",
        "node_id": ",".join(nodes),
        "placement/device": "; ".join(device for _, device, _ in where),
        "placement/gpus": ";".join(gpus for _, _, gpus in where),
        "placement/gpu_share": "1" if any(gpus for _, _, gpus in where) else "0",
        "placement/workers": str(len(where)),
        "placement/nodes": str(len(nodes)),
    }


def run_workers(
    run_config,
    run_dir: Path,
    report,
    reporter,
    *,
    workers: int,
    cpu: float,
    gpu: float,
    sync_epochs: frozenset[int],
    cost: str | None,
    trial_name: str,
) -> None:
    """Train ``run_config`` on ``workers`` Ray Train workers; ``report(record, payload, extra)``
    reports one epoch to Tune (as the one-worker path does). A checkpoint in ``run_dir`` resumes."""
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.queue import Empty, Queue

    from mtsam.config import config_to_dict
    from mtsam.trainer import BEST_ADAPTER, CHECKPOINT

    # Train's preemption watcher only observes (one more actor per trial, and a core-worker error line
    # about its restart policy); the trial's checkpoints go through Tune anyway. Set it to 1 to keep it.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # Train gives a worker group 60 s to start; on a loaded machine (here: 2 cores, trials
    # starting while others train) new worker processes took ~50 s and a later trial's timed out.
    # check_fits already keeps trials to what the cluster holds, so waiting longer is safe.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")
    files = _read_files(run_dir, (CHECKPOINT, BEST_ADAPTER))
    records = Queue(actor_options={"num_cpus": 0})
    replies = Queue(actor_options={"num_cpus": 0})
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={
            "run_config": config_to_dict(run_config),
            "resume": [ray.put(files)] if CHECKPOINT in files else None,  # a list: not resolved
            "records": records,
            "replies": replies,
            "sync_epochs": sync_epochs,
            "cost": cost,
            "cpu": cpu,
            "gpu": gpu,
        },
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, use_gpu=bool(gpu), resources_per_worker=worker_resources(cpu, gpu)
        ),
        run_config=ray.train.RunConfig(
            name=trial_name,
            storage_path=str(run_dir / "ray-train"),  # Train's own state; checkpoints go through Tune
            # no retries inside Train (workers or controller): the Tune trial fails and Tune
            # retries it from its last checkpoint (max_failures), as for one-worker trials
            failure_config=ray.train.FailureConfig(max_failures=0, controller_failure_limit=0),
        ),
    )
    outcome: dict = {}

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the trial's thread
            outcome["error"] = exc

    thread = threading.Thread(target=fit, name="ray-train", daemon=True)
    thread.start()
    stop_sent, group = False, ""
    try:
        while True:
            try:
                record, payload, best, extra = records.get(timeout=0.5)
            except Empty:
                if not thread.is_alive() and records.empty():
                    break
                continue
            group = extra.pop(PLACEMENT_GROUP, "") or group
            if best is not None:  # replaced, not rewritten: a snapshot in flight links the old one
                tmp = run_dir / f"{BEST_ADAPTER}.tmp"
                tmp.write_bytes(best)
                tmp.replace(run_dir / BEST_ADAPTER)
            try:
                report(record, payload, extra)
                reporter.check()
            except SystemExit:  # Tune stopped the trial: the workers end after this epoch
                replies.put(STOP)
                stop_sent = True
                raise
            if record["epoch"] in sync_epochs:
                replies.put(GO)
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
    finally:
        if not stop_sent and thread.is_alive():
            replies.put(STOP)
        _release(group)


def _release(group_hex: str) -> None:
    """Remove the workers' placement group now, whatever ended the run. Train removes it itself on a
    normal end; a trial that Tune stops is killed right after this function returns, and then only
    Train's cleaner actor (polling the controller through the State API) would free the CPUs."""
    if not group_hex:
        return
    import ray
    from ray.util.placement_group import PlacementGroup

    with contextlib.suppress(Exception):  # already removed: nothing to do
        ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(group_hex)))
