"""A self-contained HTML page: tables as HTML, figures embedded as base64 PNG (one file to mail)."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.export import format_value

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; font-size: 13px; margin: 0.5em 0 1.5em; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: right; }
th { background: #f4f4f4; }
td.text, th.text { text-align: left; }
.note { background: #eef4fb; border-left: 4px solid #6a9fd4; padding: 6px 10px; margin: 4px 0; }
figure { margin: 1em 0; } img { max-width: 100%; }
caption, figcaption { caption-side: top; text-align: left; color: #444; font-size: 13px; padding: 4px 0; }
.wide { overflow-x: auto; max-width: 100%; }
pre { background: #f6f6f6; padding: 8px; font-size: 13px; white-space: pre-wrap; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; }
dt { font-weight: 600; } dd { margin: 0; }
"""


def table(frame: pd.DataFrame, caption: str = "", digits: int = 3) -> str:
    """Numbers right-aligned and formatted as in the Markdown/LaTeX exports."""
    numeric = [
        pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]) for c in frame
    ]
    cls = ["" if n else ' class="text"' for n in numeric]
    head = "".join(f"<th{c}>{html.escape(str(name))}</th>" for c, name in zip(cls, frame.columns))
    rows = []
    for values in frame.itertuples(index=False, name=None):
        cells = "".join(f"<td{c}>{html.escape(format_value(v, digits))}</td>" for c, v in zip(cls, values))
        rows.append(f"<tr>{cells}</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    body = f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return f'<div class="wide">{body}</div>'  # a wide table scrolls itself, not the page


def figure(path: str | Path, caption: str = "") -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">{cap}</figure>'


def facts(items: Mapping[str, Any]) -> str:
    rows = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>" for k, v in items.items())
    return f"<dl>{rows}</dl>"


def paragraphs(lines: Sequence[str], code: bool = False) -> str:
    tag = "pre" if code else "p"
    if code:
        return f"<pre>{html.escape(chr(10).join(lines))}</pre>"
    return "".join(f"<{tag}>{html.escape(line)}</{tag}>" for line in lines)


def notes(lines: Sequence[str]) -> str:
    return "".join(f'<div class="note">{html.escape(line)}</div>' for line in lines)


def section(title: str, *blocks: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{''.join(blocks)}</section>"


def page(title: str, blocks: Sequence[str]) -> str:
    body = "".join(blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )
