"""Reproducible randomness kept as a buffer (a torch.Generator does not survive state_dict/pickle)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def new_rng_state(seed: int | None) -> Tensor:
    """CPU generator state seeded from ``seed`` or, by default, from ``torch.initial_seed()``."""
    gen = torch.Generator()
    gen.manual_seed(torch.initial_seed() if seed is None else int(seed))
    return gen.get_state()


def draw(state: Tensor, sample: Callable[[torch.Generator], Tensor]) -> Tensor:
    """Run ``sample(generator)`` from ``state`` and advance ``state`` in place."""
    gen = torch.Generator()
    gen.set_state(state.cpu())
    out = sample(gen)
    state.copy_(gen.get_state())
    return out
