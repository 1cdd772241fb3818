"""Parameterised notebooks (``sweep_summary``, ``pareto``) and a headless runner.

from analysis.notebooks import run_notebook
run_notebook("pareto", "out/", tracking_uri="sqlite:///runs/mlflow.db", experiment="my-sweep")
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from analysis.errors import AnalysisError

NOTEBOOK_DIR = Path(__file__).parent
NOTEBOOKS = ("sweep_summary", "pareto")


_env_lock = threading.Lock()
_env_users = 0
_env_saved: str | None = None


@contextlib.contextmanager
def _agg_backend() -> Iterator[None]:
    """MPLBACKEND=Agg while any notebook runs: kernels inherit this process's environment.

    Counted, so that notebooks run from several threads do not restore it under each other.
    """
    global _env_users, _env_saved
    with _env_lock:
        if _env_users == 0:
            _env_saved = os.environ.get("MPLBACKEND")
            os.environ["MPLBACKEND"] = "Agg"
        _env_users += 1
    try:
        yield
    finally:
        with _env_lock:
            _env_users -= 1
            if _env_users == 0:
                if _env_saved is None:
                    os.environ.pop("MPLBACKEND", None)
                else:
                    os.environ["MPLBACKEND"] = _env_saved


def run_notebook(
    name: str, out_dir: str | Path, kernel_name: str = "python3", timeout: int = 600, **params: Any
) -> Path:
    """Execute notebook ``name`` with papermill into ``out_dir/<name>.ipynb``; returns that path.

    ``params`` override the notebook's ``parameters`` cell (``tracking_uri``, ``experiment``,
    ``parent_run_id``); ``out_dir`` is passed too, so the figures land beside the notebook.
    Safe to call from several threads at once (one kernel each).
    """
    import papermill as pm

    stem = name.removesuffix(".ipynb")
    if stem not in NOTEBOOKS:
        raise AnalysisError(f"unknown notebook '{name}'; expected one of {list(NOTEBOOKS)}")
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{stem}.ipynb"
    params = {"out_dir": str(out), **params}
    with _agg_backend():
        try:
            pm.execute_notebook(
                str(NOTEBOOK_DIR / f"{stem}.ipynb"),
                str(dest),
                parameters=params,
                kernel_name=kernel_name,
                cwd=str(out),
                progress_bar=False,
                execution_timeout=timeout,
            )
        except pm.PapermillExecutionError as err:
            raise AnalysisError(f"notebook {stem} failed ({dest}): {err.ename}: {err.evalue}") from err
    return dest
