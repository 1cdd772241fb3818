"""Trial checkpoint folders on storage: how many are kept, and repairing them before a restore.

Tune's own ``CheckpointConfig(num_to_keep=k)`` also forces a full experiment-state snapshot (every
trial's JSON state and the searcher's pickle, on the driver's thread) after every k checkpoints of
a trial: with k = 1, after every epoch of every trial. On the quickstart that was 35 snapshots of
20–25 ms per sweep, each one delaying the answer a waiting trial needs (an ASHA rung, its next
config). On a storage path, ``KeepLatestCheckpoints`` deletes the older folders itself and Tune keeps
its normal ≥ 10 s snapshot period; ``refill_checkpoints`` repairs what a lagging snapshot then
points at. Cloud storage (``s3://``) keeps Tune's forced snapshots: there is no refill there.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from ray import tune


class KeepLatestCheckpoints(tune.Callback):
    """Delete a trial's checkpoint folders beyond its newest ``keep`` as each new one registers."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._kept: dict[str, list[tune.Checkpoint]] = {}

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        kept = self._kept.setdefault(trial.trial_id, [])
        kept.append(checkpoint)
        while len(kept) > self.keep:
            old = kept.pop(0)
            if old.path != checkpoint.path:  # a restored trial may write into a folder again
                try:
                    old.filesystem.delete_dir(old.path)
                except FileNotFoundError:
                    pass
                except OSError as exc:  # a folder left behind is not worth ending the sweep
                    logging.getLogger(__name__).warning("could not delete %s: %s", old.path, exc)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._kept.pop(trial.trial_id, None)  # its folders stay: the newest is the trial's result


def checkpoint_settings(storage: str, keep: int) -> tuple[int | None, list[tune.Callback]]:
    """(Tune's ``num_to_keep``, extra callbacks) for a sweep on ``storage``."""
    if "://" in storage:
        return keep, []
    return None, [KeepLatestCheckpoints(keep)]


def refill_checkpoints(exp_path: str) -> list[Path]:
    """Before a restore: give back every checkpoint folder a trial's newer checkpoint replaced.

    Tune saves its state only every ≥ 10 s while checkpoint folders are deleted as soon as a newer
    one registers; a driver killed in between leaves a state that points at a deleted folder, and
    that trial could never be restored. Our checkpoints say which epoch they hold, so the missing
    folder gets the newest one's files (hard links) and the trial resumes from there.
    Local storage only (a cloud URI has no such folders here). Returns the folders created."""
    if "://" in exp_path:
        return []
    created = []
    for trial_dir in Path(exp_path).glob("trial_*"):
        found = sorted(p for p in trial_dir.glob("checkpoint_*") if p.name[11:].isdigit())
        if not found:
            continue
        newest = found[-1]
        for index in range(int(newest.name[11:])):
            missing = trial_dir / f"checkpoint_{index:06d}"
            if not missing.exists():
                shutil.copytree(newest, missing, copy_function=os.link)
                created.append(missing)
    return created
