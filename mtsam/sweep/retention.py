"""Trial checkpoint folders on storage: repairing them before a restore.

Tune deletes a trial's older checkpoint folder as soon as a newer one registers (``num_to_keep``)
but saves its own state, which names the folder to restore from, a moment later; a driver killed
in between leaves a state pointing at a deleted folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


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
