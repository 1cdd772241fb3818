"""Run the trainer on N gloo workers in local processes (plain ``torch.distributed``, no Ray).

``run_jobs`` runs several training jobs one after another in the same N processes and process
group: starting processes (torch and mtsam imports) costs more than these tiny runs themselves.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _job(rank: int, job: dict, out: Path) -> None:
    from mtsam.config import load_config
    from mtsam.distributed import DataParallel
    from mtsam.trainer import Trainer

    extra = job.get("extra", ())
    trainer = Trainer(
        load_config(overrides=job["overrides"]),
        out / f"rank{rank}",
        resume_from=job.get("resume"),
        parallel=DataParallel.from_process_group(),
        # "stop1": rank 0 asks every worker to stop after epoch 1 (a checkpoint mid-run)
        callbacks=[lambda record, t: setattr(t, "stop", True)] if "stop1" in extra else [],
    )
    summary = trainer.fit()
    evals = {split: trainer.evaluate(split) for split in ("val", "test")} if "eval" in extra else {}
    if rank == 0:
        (out / "result.json").write_text(
            json.dumps({"history": trainer.history, "summary": summary, "evals": evals}, default=str)
        )


def _worker(rank: int, world: int, port: int, jobs: list[dict]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for job in jobs:
            _job(rank, job, Path(job["out"]))
            dist.barrier()
    finally:
        dist.destroy_process_group()


def run_jobs(world: int, jobs: list[dict]) -> list[dict]:
    """Each job: ``out`` (folder; rank r trains in out/rank<r>), ``overrides``, optional ``resume``
    (a checkpoint or run folder) and ``extra`` ("eval": score val and test after training,
    "stop1": stop after epoch 1). Returns rank 0's history, summary and evals per job."""
    jobs = [{**job, "out": str(job["out"])} for job in jobs]
    mp.spawn(_worker, args=(world, free_port(), jobs), nprocs=world)
    return [json.loads((Path(job["out"]) / "result.json").read_text()) for job in jobs]


def run_workers(world: int, overrides: list, out: Path, resume: str | None = None, extra=()) -> dict:
    return run_jobs(world, [{"out": out, "overrides": overrides, "resume": resume, "extra": list(extra)}])[0]
