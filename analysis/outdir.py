"""The report's output folder: written in full or not at all, and nothing it did not write is touched.

A folder the report wrote holds a manifest ``.mtsam-report.json`` listing its files. ``--out DIR``
accepts a new folder, an empty one, or one with such a manifest; any other non-empty folder (a
project root, a folder holding ``mlflow.db``) is refused before any work. In a report folder only
the files of the old manifest are replaced or removed; every other file there stays.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from analysis.errors import AnalysisError

MANIFEST = ".mtsam-report.json"
_TOOL = "analysis.report"


def _read_manifest(out: Path) -> list[str]:
    path = out / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = data["files"] if data.get("tool") == _TOOL else None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise AnalysisError(f"{path} is not a report manifest ({err}); choose another --out") from err
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise AnalysisError(f"{path} is not a report manifest (no list of files); choose another --out")
    # plain names only: a manifest must never point the report at files outside its folder
    return [f for f in files if f and Path(f).name == f and f not in (".", "..", MANIFEST)]


def check_out_dir(out: Path) -> list[str]:
    """Fail before any work when ``out`` cannot take a report; returns the old report's files."""
    if out.exists() and not out.is_dir():
        raise AnalysisError(f"output path {out} is a file; expected a directory")
    existing = out.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise AnalysisError(f"output directory {out} cannot be created: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise AnalysisError(f"output directory {out} cannot be created: {existing} is not writable")
    if not out.exists():
        return []
    if not os.access(out, os.W_OK | os.X_OK):
        raise AnalysisError(f"output directory {out} is not writable")
    if (out / MANIFEST).exists():
        return _read_manifest(out)
    if any(out.iterdir()):
        raise AnalysisError(
            f"output directory {out} is not empty and is not a report folder (no {MANIFEST}); "
            "give a new or empty folder, nothing in it is deleted"
        )
    return []


def _write_manifest(out: Path, files: Iterable[str]) -> None:
    tmp = out / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps({"tool": _TOOL, "files": sorted(set(files))}, indent=1), encoding="utf-8")
    os.replace(tmp, out / MANIFEST)


def write_report_dir(out: Path, write: Callable[[Path], Iterable[Path]]) -> list[str]:
    """Run ``write(staging_dir)`` and move what it wrote into ``out``; returns the file names.

    Staging happens in a hidden folder beside ``out``, so an error leaves ``out`` as it was (and
    creates nothing). The manifest lists old and new files while they are moved in, so an
    interrupted move still leaves every file the report wrote listed in it.
    """
    old = check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        written = [p.name for p in write(staging)]
        if not out.exists():
            _write_manifest(staging, written)
            staging.chmod(0o755)  # mkdtemp makes it private; the report is meant to be shared
            os.replace(staging, out)
            return written
        _write_manifest(out, [*old, *written])
        for name in written:
            os.replace(staging / name, out / name)
        for name in set(old) - set(written):
            stale = out / name
            if stale.is_file() and not stale.is_symlink():
                stale.unlink()
        _write_manifest(out, written)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)
