"""Tables to Markdown (written here: pandas' to_markdown needs tabulate), LaTeX and CSV."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

_NA = "–"
# LaTeX has no Unicode arrows/Greek in text mode by default
_LATEX_SYMBOLS = {"↑": r"$\uparrow$", "↓": r"$\downarrow$", "Δ": r"$\Delta$"}


def format_value(value: Any, digits: int = 3) -> str:
    """Cell text: ints with thousands separators, floats with ``digits`` decimals, missing as '–'."""
    if value is None or value is pd.NA or value is pd.NaT:
        return _NA
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        if math.isnan(value):
            return _NA
        if value != 0 and abs(value) < 10 ** (1 - digits):  # a learning rate: 0.0003, not 0.000
            return f"{float(value):.{digits}g}"
        return f"{float(value):.{digits}f}"
    return str(value)


def _cells(frame: pd.DataFrame, digits: int) -> list[list[str]]:
    return [[format_value(v, digits) for v in row] for row in frame.itertuples(index=False, name=None)]


def to_markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """GitHub-flavoured Markdown table; numbers right-aligned."""

    def esc(text: str) -> str:
        return text.replace("|", r"\|").replace("\n", " ")

    header = [esc(str(c)) for c in frame.columns]
    numeric = [
        pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]) for c in frame
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---:" if n else "---" for n in numeric) + " |",
    ]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in _cells(frame, digits)]
    return "\n".join(lines) + "\n"


def to_latex(
    frame: pd.DataFrame, digits: int = 3, caption: str | None = None, label: str | None = None
) -> str:
    """booktabs LaTeX tabular (pandas/jinja2), with ↑/↓/Δ as math symbols."""
    text = pd.DataFrame(_cells(frame, digits), columns=[str(c) for c in frame.columns]).to_latex(
        index=False, escape=True, caption=caption, label=label, column_format=_align(frame)
    )
    for symbol, latex in _LATEX_SYMBOLS.items():
        text = text.replace(symbol, latex)
    return text.replace(_NA, "--")


def _align(frame: pd.DataFrame) -> str:
    return "".join("r" if pd.api.types.is_numeric_dtype(frame[c]) else "l" for c in frame)


def export_table(
    frame: pd.DataFrame, stem: str | Path, formats: Iterable[str] = ("md", "tex", "csv"), digits: int = 3
) -> list[Path]:
    """Write ``stem.md``/``.tex``/``.csv`` (CSV keeps full precision); returns the paths."""
    stem = Path(stem)
    writers = {
        "md": lambda p: p.write_text(to_markdown(frame, digits), encoding="utf-8"),
        "tex": lambda p: p.write_text(to_latex(frame, digits), encoding="utf-8"),
        "csv": lambda p: frame.to_csv(p, index=False),
    }
    paths = []
    for fmt in formats:
        if fmt not in writers:
            raise ValueError(f"unknown table format '{fmt}'; expected some of {sorted(writers)}")
        path = stem.with_name(f"{stem.name}.{fmt}")
        writers[fmt](path)
        paths.append(path)
    return paths
