"""Task weighting for multi-task training, chosen by name (LibMTL style).

    w = build_weighting("dwa", ["semantic", "depth", "normal"], temperature=2.0)
    weights = w.backward(losses, shared_params)   # instead of losses.sum().backward()
    optimizer.step(); w.after_step(losses.detach())
    ...; w.on_epoch_end(epoch_mean_losses)

Weights are on the "equal weighting = all ones" scale (they sum to T); see ``base``.  Methods with
``uses_gradients`` need ``shared_params`` and cost extra backward passes (see each class docstring).
Use bf16 autocast rather than an fp16 GradScaler: several methods (db_mtl, famo, mgda with loss
normalisation) are invariant to a constant loss scale and would undo the scaler's scaling.
"""

from . import cagrad, db_mtl, dwa, famo, gradnorm, imtl, mgda, pcgrad, simple, uw  # noqa: F401  (register)
from .base import LossWeighting, Weighting
from .gradients import GradientWeighting
from .hparam import HParam
from .registry import WEIGHTINGS, build_weighting, list_weightings, register_weighting

__all__ = [
    "WEIGHTINGS",
    "GradientWeighting",
    "HParam",
    "LossWeighting",
    "Weighting",
    "build_weighting",
    "list_weightings",
    "register_weighting",
]
