"""The MTSAM trainer: one multi-task (or single-task) training run, nothing about Ray.

Per epoch it trains, evaluates on the validation split, keeps the best epoch (by validation Δb or a
named metric) together with that epoch's test metrics, writes ``metrics.jsonl`` and a
self-describing checkpoint, then calls the epoch callbacks with every metric.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler

from . import factory
from .adapter_state import atomic_torch_save, load_format, load_trainable, save_adapter
from .adapters import orthogonality_loss
from .config import RunConfig, config_to_dict, dump_yaml
from .device import autocast_for, pick_device
from .distributed import DataParallel
from .errors import CheckpointError, MTSAMError
from .evaluation import evaluate, selection_metric
from .faults import FaultInjector
from .memory_plan import refuse_if_too_big
from .optim import build_optimizer, build_scheduler
from .tensor_pack import pack, unpack
from .trivial import trivial_predictors, write_trivial

CHECKPOINT = "checkpoint.pt"
BEST_ADAPTER = "best_adapter.pt"
METRICS = "metrics.jsonl"
TRAIN_FORMAT, TRAIN_FORMAT_VERSION = "mtsam-train", 2
# Version 2 packs every tensor into one buffer per dtype (``mtsam.tensor_pack``) and keeps the
# history as JSON text: the per-epoch save pickles a few thousand objects instead of ~25 k.

LAST_EPOCH = "last_epoch"  # the selection rule without a validation split

EpochCallback = Callable[[dict, "Trainer"], None]


class NonFiniteLoss(MTSAMError):
    """Training diverged; the message says where ("non-finite loss at epoch E step S")."""


class Trainer:
    def __init__(
        self,
        config: RunConfig,
        run_dir: str | Path,
        callbacks: list[EpochCallback] | None = None,
        resume_from: str | Path | None = None,
        progress: bool = False,
        interrupt: Callable[[], None] | None = None,
        write_checkpoint: Callable[[dict, Path], object] | None = None,
        gpu_memory_bytes: float | None = None,
        parallel: DataParallel | None = None,
    ) -> None:
        """``interrupt`` is called between optimiser steps and evaluation batches; whatever it
        raises ends the run there (a sweep's trial leaves at once when Tune stops it).
        ``write_checkpoint(payload, path)`` writes each epoch's training checkpoint (default: at
        once, atomically); the payload already holds copies, so a caller may write it later.
        On CUDA a config whose estimated peak memory exceeds ``gpu_memory_bytes`` (default: the
        device's memory) is refused here, before anything is built (``mtsam.memory_plan``).
        ``parallel``: this process is one of N data-parallel workers (``mtsam.distributed``): it
        trains on its shard, gradients and metrics are pooled, and only rank 0 writes files and
        calls the callbacks (a callback may set ``trainer.stop`` to end every worker after the epoch)."""
        self.config = config
        self.parallel = parallel
        self.is_main = parallel is None or parallel.is_main
        self.world = 1 if parallel is None else parallel.world
        self.stop = False
        self.run_dir = Path(run_dir).resolve()
        self.callbacks = list(callbacks or [])
        self.progress = progress
        self.interrupt = interrupt or (lambda: None)
        self.write_checkpoint = write_checkpoint or atomic_torch_save
        self.device = pick_device(config.train.device)
        self._autocast = autocast_for(self.device, config.train.precision)
        refuse_if_too_big(config, self.device, gpu_memory_bytes)
        torch.manual_seed(config.train.seed)
        self.model = factory.build_model(config).to(self.device)
        self.model.set_activation_checkpointing(config.train.activation_checkpointing)
        self.tasks = factory.tasks_for(config)
        self.task_names = list(self.tasks)
        self.weighting = factory.weighting_for(config).to(self.device)
        self.train_set, self.val_set, self.test_set = factory.build_datasets(config)
        for dataset in (self.train_set, self.val_set, self.test_set):
            dataset.verify()
        self.shared_params = self.model.shared_parameters()
        self.optimizer = build_optimizer(config.train, self.model, self.weighting)
        self.steps_per_epoch = self._steps_per_epoch()
        self.scheduler = build_scheduler(
            config.train,
            self.optimizer,
            self.steps_per_epoch * config.train.epochs,
            config.reference.warmup,
        )
        self.has_val = len(self.val_set) > 0
        # data.val_fraction = 0 (the reference trains on every image): the last epoch is selected
        self.select_key, self.select_higher = (
            selection_metric(config, self.tasks) if self.has_val else (LAST_EPOCH, True)
        )
        self.faults = FaultInjector(config.faults)
        self.epoch, self.step = 0, 0
        self.best: dict | None = None
        self.history: list[dict] = []
        self.has_tora = any(n.endswith(".U1") for n, _ in self.model.named_parameters())
        self._trivial: dict | None = None
        if resume_from is not None:
            self.load_checkpoint(resume_from)

    # ------------------------------------------------------------------ data
    def _loader(self, dataset, train: bool) -> DataLoader:
        data = self.config.data
        if not train:
            return DataLoader(
                dataset,
                batch_size=data.eval_batch_size or data.batch_size,
                shuffle=False,
                num_workers=data.num_workers,
            )
        # Shuffle order depends only on (seed, epoch), so a resumed run sees the same batches.
        generator = torch.Generator().manual_seed(self.config.train.seed * 100_003 + self.epoch)
        dataset.set_epoch(self.epoch)
        if self.parallel is not None:
            return self.parallel.train_loader(dataset, data, generator)
        return DataLoader(
            dataset,
            batch_size=data.batch_size,
            sampler=RandomSampler(dataset, generator=generator),
            num_workers=data.num_workers,
            drop_last=len(dataset) > data.batch_size,
        )

    @property
    def global_batch(self) -> int:
        """Images per optimiser step over all workers: batch_size × workers × grad_accum."""
        return self.config.data.batch_size * self.world * self.config.train.grad_accum

    def _steps_per_epoch(self) -> int:
        data, train = self.config.data, self.config.train
        size = len(self.train_set) if self.parallel is None else self.parallel.shard_size(len(self.train_set))
        batches = max(1, size // data.batch_size)
        steps = math.ceil(batches / train.grad_accum)
        return min(steps, train.max_steps_per_epoch or steps)

    # ------------------------------------------------------------------ training
    def train_epoch(self) -> dict:
        self.model.train()
        accum = self.config.train.grad_accum
        lam = self.config.train.ortho_weight if self.has_tora else 0.0
        sums = torch.zeros(len(self.task_names))
        weight_sums = torch.zeros(len(self.task_names))
        ortho_sum, micro, images, start = 0.0, 0, 0, time.perf_counter()
        loader = self._loader(self.train_set, train=True)
        batches = loader
        if self.progress:
            from tqdm import tqdm

            batches = tqdm(loader, desc=f"epoch {self.epoch + 1}", leave=False, unit="batch")
        steps_done = 0
        self.optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(batches):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            with self._autocast():
                outputs = self.model(batch["image"])
            losses = torch.stack([self.tasks[t].loss(outputs[t].float(), batch[t]) for t in self.task_names])
            losses = self.faults.corrupt_loss(losses, self.epoch + 1, self.step + 1)
            if not torch.isfinite(losses).all():
                raise NonFiniteLoss(f"non-finite loss at epoch {self.epoch + 1} step {self.step + 1}")
            weights = self.weighting.backward(losses / accum, self.shared_params)
            sums += losses.detach().float().cpu()
            weight_sums += weights.detach().float().cpu()
            micro += 1
            images += batch["image"].shape[0]
            last_of_group = (i + 1) % accum == 0 or i + 1 == len(loader)
            if not last_of_group:
                continue
            self._scale_task_gradients()
            if lam > 0:  # once per optimiser step, as in the reference
                ortho = orthogonality_loss(self.model)
                (lam * ortho).backward()
                ortho_sum += float(ortho.detach())
            if self.parallel is not None:  # DDP's average, once per optimiser step
                self.parallel.average_gradients(self._trainable())
            if self.config.train.grad_clip:
                torch.nn.utils.clip_grad_norm_(self._trainable(), self.config.train.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.weighting.after_step(
                losses.detach() if self.parallel is None else self.parallel.mean(losses)
            )
            self.step += 1
            steps_done += 1
            self.faults.maybe_crash(self.epoch + 1, steps_done)
            self.interrupt()
            if steps_done >= self.steps_per_epoch:
                break
        elapsed = time.perf_counter() - start
        if self.parallel is not None:  # pooled over the workers: every worker logs the same epoch
            pooled = self.parallel.sum([*sums, *weight_sums, micro, images])
            t = len(self.task_names)
            sums, weight_sums = pooled[:t].float(), pooled[t : 2 * t].float()
            micro, images = int(pooled[2 * t]), int(pooled[2 * t + 1])
        means = sums / max(micro, 1)
        self.weighting.on_epoch_end(means.to(self.device))
        record = {f"train/loss/{t}": float(means[k]) for k, t in enumerate(self.task_names)}
        weights = weight_sums / max(micro, 1)
        record.update({f"train/weight/{t}": float(weights[k]) for k, t in enumerate(self.task_names)})
        record["train/loss/ortho"] = ortho_sum / max(steps_done, 1)
        task_term = float((weights * means).sum()) / len(self.task_names)
        record["train/loss/total"] = task_term + lam * record["train/loss/ortho"]
        record["train/lr"] = self.optimizer.param_groups[0]["lr"]
        record["train/epoch_time_s"] = elapsed
        record["train/images_per_s"] = images / elapsed if elapsed > 0 else 0.0
        return record

    def _scale_task_gradients(self) -> None:
        """Put the task term on the convex scale: (1/T)·Σ_t w_t·L_t, whatever the method.

        Weightings return weights on the ew scale (they sum to T; fixed [1, 1, 4] → [0.5, 0.5, 2]);
        the reference normalises them to sum to 1 ([1/6, 1/6, 2/3]) and adds λ·ortho to that. So
        the gradients the weighting accumulated are divided by T before the regulariser's are
        added: fixed [1, 1, 4] with λ = 1 is then exactly the reference objective, and λ weighs
        the regulariser against a convex combination of task losses for every method
        (docs/REFERENCE.md). Gradients, not losses, are scaled: methods on log-losses (famo,
        db_mtl) would ignore a constant factor on the losses.
        """
        if len(self.task_names) == 1:
            return
        grads = [p.grad for p in self._trainable() if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, 1.0 / len(self.task_names))

    def _trainable(self):
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _interruptible(self, loader):
        for batch in loader:
            self.interrupt()
            yield batch

    def evaluate(self, split: str) -> dict:
        dataset = {"val": self.val_set, "test": self.test_set}[split]
        loader = (
            self._loader(dataset, train=False)
            if self.parallel is None
            else self.parallel.eval_loader(dataset, self.config.data)
        )
        return evaluate(
            self.model,
            self._interruptible(loader),
            self.tasks,
            split,
            self.config.baseline,
            self.device,
            self._autocast,
            per_image=self.config.reference.per_image_metrics,
            merge=None if self.parallel is None else self.parallel.merge_meters,
        )

    @property
    def trivial(self) -> dict:
        """Trivial predictors (majority class, mean depth, mean normal) scored on val and test."""
        if self._trivial is None and not self.is_main:
            return {}  # only rank 0 writes and reports it
        if self._trivial is None:
            self._trivial = trivial_predictors(self.train_set, self.val_set, self.test_set, self.tasks)
        return self._trivial

    def fit(self) -> dict:
        """Train up to ``train.epochs`` (continuing after a resume); returns the final summary."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            (self.run_dir / "config.yaml").write_text(dump_yaml(self.config))
            write_trivial(self.run_dir, self.trivial)
        while self.epoch < self.config.train.epochs:
            if self.parallel is not None:  # dropout differs per worker, reproducibly per epoch
                torch.manual_seed(
                    (self.config.train.seed * 1_000_003 + self.epoch) * 1009 + self.parallel.rank
                )
            record = {"epoch": self.epoch + 1, **self.train_epoch()}
            self.epoch += 1
            if self.epoch % self.config.train.eval_every == 0 or self.epoch == self.config.train.epochs:
                start = time.perf_counter()
                if self.has_val:
                    record.update(self.evaluate("val"))
                self._update_best(record)
                record["train/eval_time_s"] = time.perf_counter() - start
            if self.best:
                record.update(self.best["test"])
                record["best/epoch"] = self.best["epoch"]
            self.history.append(record)
            if self.is_main:
                self.save_checkpoint()
                with open(self.run_dir / METRICS, "a") as fh:
                    fh.write(json.dumps(record) + "\n")
                for callback in self.callbacks:
                    callback(record, self)
            if self.parallel is not None:
                self.stop = self.parallel.any(self.stop)
            if self.stop:
                break
        return self.summary()

    def _update_best(self, record: dict) -> None:
        value = record["epoch"] if self.select_key == LAST_EPOCH else record.get(self.select_key)
        if value is None or not math.isfinite(value):
            return
        if self.best is not None:
            better = value > self.best["value"] if self.select_higher else value < self.best["value"]
            if not better:
                return
        self.best = {
            "epoch": self.epoch,
            "metric": self.select_key,
            "value": value,
            "val": {k: v for k, v in record.items() if k.startswith("val/")},
        }
        self.best["test"] = self.evaluate("test")
        if not self.is_main:
            return
        save_adapter(
            self.model,
            self.run_dir / BEST_ADAPTER,
            extra={
                "epoch": self.epoch,
                "metric": self.select_key,
                "value": value,
                "run_config": config_to_dict(self.config),
                "val": self.best["val"],
                "test": self.best["test"],
            },
        )

    def summary(self) -> dict:
        return {
            "run_dir": str(self.run_dir),
            "epochs": self.epoch,
            "steps": self.step,
            "workers": self.world,
            "global_batch": self.global_batch,
            "best": self.best,
            "selection": self.selection_text(),
            "parameters": self.model.parameter_summary(),
            "last": self.history[-1] if self.history else {},
            "trivial": self.trivial,
        }

    def selection_text(self) -> str:
        if self.select_key == LAST_EPOCH:
            return "last epoch (no validation split: data.val_fraction = 0)"
        return f"best epoch by {self.select_key} ({'max' if self.select_higher else 'min'})"

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        tensors = {
            "model": {n: p for n, p in self.model.named_parameters() if p.requires_grad},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "weighting": self.weighting.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            },
        }
        payload = {
            "format": TRAIN_FORMAT,
            "format_version": TRAIN_FORMAT_VERSION,
            "config": config_to_dict(self.config),
            "epoch": self.epoch,
            "step": self.step,
            "best": self.best,
            "history_json": json.dumps(self.history),
            "packed": pack(tensors),  # copies: later steps do not change what is written
        }
        self.faults.maybe_disk_full(self.epoch, self.run_dir / CHECKPOINT)
        self.write_checkpoint(payload, self.run_dir / CHECKPOINT)

    def load_checkpoint(self, path: str | Path) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / CHECKPOINT
        state = read_checkpoint(path)
        load_trainable(self.model, state["model"], source=f"training checkpoint {path}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.weighting.load_state_dict(state["weighting"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.best, self.history = state["best"], state["history"]
        self._apply_lr()
        # metrics.jsonl holds exactly the epochs of the checkpoint: a crash after it is forgotten.
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / METRICS, "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in self.history)

    def _apply_lr(self) -> None:
        """After loading a checkpoint: train on with this config's lr. A plain resume has the same lr
        (no change); a PBT trial that took another trial's checkpoint continues it with its own,
        mutated lr, at the schedule's position of the checkpoint (warmup / decay go on as they were)."""
        lr = self.config.train.lr
        groups = self.optimizer.param_groups
        if list(self.scheduler.base_lrs) == [lr] * len(groups):
            return
        factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        self.scheduler.base_lrs = [lr] * len(groups)
        for group in groups:
            group["initial_lr"], group["lr"] = lr, lr * factor


def read_checkpoint(path: str | Path) -> dict:
    """A training checkpoint as plain data: config, epoch, step, best, history, and the tensors of
    model (trainable only), optimizer, scheduler, weighting and rng. Reads format versions 1 and 2."""
    state = load_format(path, TRAIN_FORMAT, "training checkpoint")
    version = state.get("format_version")
    if version == 1:  # written before packing: already plain
        return {**state, "history": list(state["history"])}
    if version != TRAIN_FORMAT_VERSION:
        raise CheckpointError(
            f"training checkpoint {path}: format version {version} "
            f"(this MTSAM reads 1 and {TRAIN_FORMAT_VERSION})"
        )
    history = json.loads(state.pop("history_json"))
    return {**state, **unpack(state.pop("packed")), "history": history}
