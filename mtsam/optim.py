"""Optimiser over the trainable parameters and a warmup schedule counted in optimiser steps."""

from __future__ import annotations

import math

import torch


def build_optimizer(train, model: torch.nn.Module, weighting: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    params += [p for p in weighting.parameters() if p.requires_grad]  # e.g. uncertainty log-variances
    cls = torch.optim.AdamW if train.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=train.lr, weight_decay=train.weight_decay)


def lr_factor(step: int, total: int, warmup: int, schedule: str, warmup_mode: str = "shifted") -> float:
    """Multiplier of the base lr after ``step`` optimiser steps (linear warmup, then decay).

    Warm-up ``shifted`` (ours) gives step k the factor (k+1)/warmup, so the first step already
    moves; ``reference`` gives k/warmup as the official code does (its first step has lr 0).
    """
    if warmup and step < warmup:
        return (step + (warmup_mode != "reference")) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - progress)


def build_scheduler(train, optimizer: torch.optim.Optimizer, total_steps: int, warmup_mode: str = "shifted"):
    warmup = int(round(train.warmup_ratio * total_steps))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, train.schedule, warmup_mode)
    )
