"""Switching a family from the command line: ``--set adapter.type=lora`` / ``weighting.method=dwa``.

A config file written for ToRA carries ``adapter.ranks``; LoRA has no such field, so a plain
override would fail with "unknown key". When an override changes ``adapter.type`` or
``weighting.method``, the keys of that section that the new family does not know are dropped, and
one ``note:`` line says which. Keys the user sets in the same command are never dropped: with a
wrong one nothing is dropped and validation names it (one error line, no note). An unknown
family name drops nothing (validation names it).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

# (section, switch key) pairs, matched at any depth (a sweep's ``base.adapter``, ``baselines.adapter``)
SWITCHES = (("adapter", "type"), ("weighting", "method"))


def adapter_fields(family: Any) -> set[str] | None:
    """Field names of the adapter family ``family``, None if unknown."""
    from .adapters.config import LoRAConfig, NoAdapterConfig, SharedLoRAConfig, ToRAConfig

    for cls in (ToRAConfig, LoRAConfig, SharedLoRAConfig, NoAdapterConfig):
        if cls.model_fields["type"].default == family:
            return set(cls.model_fields)
    return None


def weighting_fields(method: Any) -> set[str] | None:
    """``method`` plus the hyperparameter names the weighting method declares, None if unknown."""
    from .weighting import WEIGHTINGS

    cls = WEIGHTINGS.get(method) if isinstance(method, str) else None
    return None if cls is None else {"method", *cls.hparams}


_FIELDS: dict[str, Callable[[Any], set[str] | None]] = {"type": adapter_fields, "method": weighting_fields}


def drop_foreign_keys(
    data: dict, overrides: Iterable[tuple[list[str], Any]], note: Callable[[str], None] | None = None
) -> list[str]:
    """Drop, from every section whose family an override switched, the keys the family does not
    have and no override set; report them in one ``note:`` line. Returns the dropped dotted keys."""
    overrides = list(overrides)
    explicit = {tuple(path) for path, _ in overrides}
    dropped: list[str] = []
    switched: list[str] = []
    for path, value in overrides:
        if len(path) < 2 or (path[-2], path[-1]) not in SWITCHES:
            continue
        section = _node(data, path[:-1])
        known = _FIELDS[path[-1]](value)
        if section is None or known is None:
            continue
        foreign = [k for k in section if k not in known]
        if any((*path[:-1], k) in explicit for k in foreign):
            continue  # the user set a key the family lacks: validation says so, in one line
        for key in foreign:
            del section[key]
        if foreign:
            prefix = ".".join(path[:-1])
            dropped += [f"{prefix}.{k}" for k in foreign]
            switched.append(f"{'.'.join(path)}={value}")
    if dropped:
        message = (
            f"note: {', '.join(switched)}: dropped {', '.join(dropped)} (not options of the chosen family)"
        )
        (note or _stderr)(message)
    return dropped


def _node(data: dict, path: list[str]) -> dict | None:
    node: Any = data
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)
