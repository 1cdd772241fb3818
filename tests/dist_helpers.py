"""Run the trainer on N gloo workers in local processes (plain ``torch.distributed``, no Ray)."""

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


def _worker(rank: int, world: int, port: int, overrides: list, out: str, resume: str | None, extra: list):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from mtsam.config import load_config
        from mtsam.distributed import DataParallel
        from mtsam.trainer import Trainer

        run_dir = Path(out) / f"rank{rank}"
        trainer = Trainer(
            load_config(overrides=overrides),
            run_dir,
            resume_from=resume,
            parallel=DataParallel.from_process_group(),
            # "stop1": rank 0 asks every worker to stop after epoch 1 (a checkpoint mid-run)
            callbacks=[lambda record, t: setattr(t, "stop", True)] if "stop1" in extra else [],
        )
        summary = trainer.fit()
        evals = {split: trainer.evaluate(split) for split in ("val", "test")} if "eval" in extra else {}
        if rank == 0:
            (Path(out) / "result.json").write_text(
                json.dumps({"history": trainer.history, "summary": summary, "evals": evals}, default=str)
            )
    finally:
        dist.destroy_process_group()


def run_workers(world: int, overrides: list, out: Path, resume: str | None = None, extra=()) -> dict:
    mp.spawn(_worker, args=(world, free_port(), overrides, str(out), resume, list(extra)), nprocs=world)
    return json.loads((out / "result.json").read_text())
