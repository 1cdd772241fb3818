"""Base class for methods that look at per-task gradients of the shared parameters.

Per step: T ``autograd.grad`` passes restricted to the shared parameters (retaining the graph), a
method-specific combination written into the shared parameters' ``.grad``, and one backward of a
"head loss" restricted to the *non-shared* trainable leaves of the graph (task heads, etc.).  Restricting
that last pass keeps the trunk from being backpropagated T+1 times.  The non-shared leaves are found by
walking the autograd graph, so the caller only has to say which parameters are shared.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch
from torch import Tensor
from torch.nn import Parameter

from mtsam.distributed import all_mean

from .base import Weighting, weighted_sum


class GradientWeighting(Weighting):
    """Combine per-task shared gradients; subclasses implement ``combine``.

    ``weight_heads``: whether the non-shared parameters get the gradient of ``sum_t w_t L_t`` (methods that
    are defined as a loss weighting: MGDA, GradNorm) or of the plain sum ``sum_t L_t`` (gradient-surgery
    methods that the papers apply to shared parameters only: PCGrad, CAGrad, IMTL-G).
    """

    uses_gradients: ClassVar[bool] = True
    weight_heads: ClassVar[bool] = False

    def backward(self, losses: Tensor, shared_params: list[Parameter]) -> Tensor:
        self._check_losses(losses)
        shared = [p for p in shared_params if p.requires_grad]
        # Data-parallel workers combine the pooled per-task gradients and losses (identity on one
        # process): the combination is nonlinear, so combining each worker's own would differ.
        grads = all_mean(task_gradients(losses, shared))
        combined, weights = self.combine(grads, all_mean(losses.detach().float()))
        head = self.head_loss(losses, weights)
        others = non_shared_leaves(head, shared_params)
        if others:
            torch.autograd.backward(head, inputs=others)
        accumulate_flat_grad(shared, combined)
        return weights.detach().float()

    @abstractmethod
    def combine(self, grads: Tensor, losses: Tensor) -> tuple[Tensor, Tensor]:
        """grads: (T, D) float32 flat gradients; losses: (T,) detached.

        Returns ((D,) combined shared gradient, (T,) weights)."""

    def head_loss(self, losses: Tensor, weights: Tensor) -> Tensor:
        return weighted_sum(losses, weights) if self.weight_heads else losses.sum()


def task_gradients(losses: Tensor, params: list[Tensor]) -> Tensor:
    """(T, D) float32 gradients of each loss w.r.t. the flattened ``params`` (zeros where unused)."""
    num_tasks = losses.shape[0]
    if not params:
        return torch.zeros(num_tasks, 0, device=losses.device)
    rows = []
    for t in range(num_tasks):
        grads = torch.autograd.grad(losses[t], params, retain_graph=True, allow_unused=True)
        rows.append(
            torch.cat(
                [(torch.zeros_like(p) if g is None else g).reshape(-1).float() for g, p in zip(grads, params)]
            )
        )
    return torch.stack(rows)


def accumulate_flat_grad(params: list[Tensor], flat: Tensor) -> None:
    """Add a flat gradient into ``p.grad`` (creating it), the way ``backward`` accumulates."""
    offset = 0
    for p in params:
        n = p.numel()
        g = flat[offset : offset + n].view_as(p).to(p.grad.dtype if p.grad is not None else p.dtype)
        offset += n
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.add_(g)


def non_shared_leaves(root: Tensor, shared_params: list[Tensor]) -> list[Tensor]:
    """Trainable leaf tensors reachable from ``root``'s graph, excluding ``shared_params``."""
    exclude = {id(p) for p in shared_params}
    leaves: list[Tensor] = []
    seen: set = set()
    stack = [root.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        leaf = getattr(fn, "variable", None)  # AccumulateGrad nodes carry their leaf
        if leaf is not None and id(leaf) not in exclude:
            leaves.append(leaf)
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return leaves


def gram(grads: Tensor) -> Tensor:
    """Float64 Gram matrix G_ij = g_i . g_j on the CPU: the small solvers work in this space."""
    g = grads.double()
    return (g @ g.T).cpu()
