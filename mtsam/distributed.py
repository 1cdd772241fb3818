"""Data-parallel training with plain ``torch.distributed``: what the trainer needs to run on N workers.

Nothing here knows about Ray: whoever starts the workers (Ray Train in a sweep, ``torchrun``, a test)
sets up the default process group, and ``DataParallel.from_process_group()`` reads rank and world
size from it.

The equivalent of DDP, done by hand: every worker holds the same trainable parameters (same seed,
same init), computes gradients on its shard of the batch, and before each optimiser step the
gradients of every trainable tensor are averaged over the workers in one flat all-reduce. DDP's
hooks would fire inside backward, which the gradient-based weightings replace by T
``autograd.grad`` passes and an orthogonality term added once per step; one reduce per optimiser
step works for all of them and for gradient accumulation (one reduce per step, not per micro-batch).

Sharding keeps a 2-worker run equal to a 1-worker run with twice the batch: the epoch's permutation
is the one the single-process trainer draws (same seed, same epoch), and worker r takes every N-th
index from r, so optimiser step k of the N workers sees exactly the images of the single process's
k-th (N × batch) batch. Evaluation is pooled: each worker scores a strided shard and the meters'
sufficient statistics (confusion matrix, error sums and pixel counts, the normal angles) are
combined, so the metrics equal a single-process evaluation of the same split.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader

from .metrics import DepthMeter, NormalMeter, SegmentationMeter
from .per_image import PerImageMeter


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_reduce_sum(tensor: Tensor) -> None:
    """In-place sum over the workers; NCCL reduces only CUDA tensors, so CPU ones take a round trip."""
    if tensor.device.type == "cpu" and dist.get_backend() == "nccl":
        on_gpu = tensor.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
        tensor.copy_(on_gpu.cpu())
    else:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def all_mean(tensor: Tensor) -> Tensor:
    """Mean of ``tensor`` over the workers (itself when there is one): what the gradient-based
    weightings see, so a nonlinear combination of per-task gradients is taken of the pooled ones."""
    world = world_size()
    if world == 1:
        return tensor
    out = tensor.detach().clone()
    _all_reduce_sum(out)
    return out / world


class DataParallel:
    """Rank, world size and the collectives of one data-parallel run (process group already up)."""

    def __init__(self, rank: int, world: int) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world of {world}")
        self.rank, self.world = rank, world

    @classmethod
    def from_process_group(cls) -> DataParallel | None:
        """The current process group's rank and size; None without one, or with a single worker
        (then the trainer runs exactly its single-process path)."""
        if world_size() == 1:
            return None
        return cls(dist.get_rank(), dist.get_world_size())

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ data
    def train_indices(self, n: int, generator: torch.Generator) -> list[int]:
        """This worker's shard of the epoch: the single-process permutation (``RandomSampler``
        draws ``randperm(n, generator)``) cut to a multiple of the world size, every N-th index."""
        order = torch.randperm(n, generator=generator).tolist()
        return order[: n - n % self.world][self.rank :: self.world]

    def train_loader(self, dataset, data, generator: torch.Generator) -> DataLoader:
        """This worker's batches of the epoch (``data``: the run config's data section); a plain
        list of indices as the sampler keeps the permutation's order."""
        indices = self.train_indices(len(dataset), generator)
        return DataLoader(
            dataset,
            batch_size=data.batch_size,
            sampler=indices,
            num_workers=data.num_workers,
            drop_last=len(indices) > data.batch_size,
        )

    def eval_loader(self, dataset, data) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=data.eval_batch_size or data.batch_size,
            sampler=self.eval_indices(len(dataset)),
            num_workers=data.num_workers,
        )

    def shard_size(self, n: int) -> int:
        return n // self.world

    def eval_indices(self, n: int) -> list[int]:
        """Every sample exactly once over the workers (no padding: the meters pool by counts)."""
        return list(range(self.rank, n, self.world))

    # ------------------------------------------------------------------ collectives
    def average_gradients(self, params: Iterable[Tensor]) -> None:
        """Average ``.grad`` over the workers, one flat all-reduce per dtype. A parameter without a
        gradient on some worker counts as zeros there, as it would in a single-process batch."""
        params = [p for p in params if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        by_dtype: dict[torch.dtype, list[Tensor]] = {}
        for p in params:
            by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
        for grads in by_dtype.values():
            flat = torch.cat([g.reshape(-1) for g in grads])
            _all_reduce_sum(flat)
            flat /= self.world
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()

    def sum(self, values: Sequence[float] | Tensor) -> Tensor:
        """Elementwise sum over the workers, in float64 (epoch loss sums, image counts)."""
        out = torch.as_tensor(values, dtype=torch.float64).clone()
        _all_reduce_sum(out)
        return out

    def mean(self, tensor: Tensor) -> Tensor:
        return all_mean(tensor)

    def any(self, flag: bool) -> bool:
        """True on every worker when it is true on one (a stop asked of rank 0 ends all of them)."""
        return bool(self.sum([float(flag)])[0] > 0)

    def gather(self, obj) -> list:
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def merge_meters(self, meters: dict) -> None:
        """Pool each meter's sufficient statistics over the workers, in place."""
        for meter in meters.values():
            if isinstance(meter, SegmentationMeter):
                _all_reduce_sum(meter.confusion)
            elif isinstance(meter, DepthMeter):
                sums = self.sum([meter.abs_sum, meter.rel_sum, meter.count])
                meter.abs_sum, meter.rel_sum, meter.count = float(sums[0]), float(sums[1]), int(sums[2])
            elif isinstance(meter, NormalMeter):  # the median needs every angle
                local = torch.cat(meter.angles) if meter.angles else torch.zeros(0)
                meter.angles = [a for a in self.gather(local) if a.numel()]
            elif isinstance(meter, PerImageMeter):  # the reference's protocol: one row per image
                meter.rows = [row for rows in self.gather(meter.rows) for row in rows]
            else:
                raise TypeError(f"cannot pool a {type(meter).__name__} over workers")
