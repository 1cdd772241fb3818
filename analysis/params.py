"""Hyperparameters: MLflow's string params back to typed values, and typed DataFrame columns.

MLflow stores every param as a string (lists/dicts as JSON, per docs/TRACKING.md); Ray's
``params.json`` is nested JSON. Both end up as flat ``{"dotted.key": typed value}``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

# Strict number syntax: Python's int()/float() also accept "1_000" or " 3", which are not numbers here.
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?|[+-]?(nan|inf|infinity)", re.IGNORECASE)
_BOOLS = {"true": True, "false": False}
_NONES = {"none", "null"}


def parse_param(text: str) -> Any:
    """One param string → int, float, bool, None, list/dict (JSON) or the string itself."""
    if not isinstance(text, str):
        return text
    s = text.strip()
    low = s.lower()
    if low in _BOOLS:
        return _BOOLS[low]
    if low in _NONES:
        return None
    if _INT.fullmatch(s):
        return int(s)
    if _FLOAT.fullmatch(s):
        return float(s)
    if s[:1] in "[{":
        try:
            return json.loads(s)
        except json.JSONDecodeError:
            return text  # e.g. a Python repr: keep it readable rather than guess
    return text


def parse_params(params: Mapping[str, str]) -> dict[str, Any]:
    return {key: parse_param(value) for key, value in params.items()}


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config → dotted keys; lists stay values (as in the MLflow params of a trial)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def typed_series(values: Iterable[Any], index: pd.Index | None = None) -> pd.Series:
    """A column whose dtype follows the parsed values: bool, int, float, str or object (lists, mixed).

    Missing values switch ints/bools to pandas' nullable dtypes, so an int column stays integral.
    """
    values = list(values)
    present = [v for v in values if not _is_missing(v)]
    kinds = {type(v) for v in present}
    if not present:
        return pd.Series([None] * len(values), index=index, dtype=object)
    has_missing = len(present) < len(values)
    if kinds == {bool}:
        dtype = "boolean" if has_missing else bool
        return pd.Series([None if _is_missing(v) else v for v in values], index=index, dtype=dtype)
    if kinds == {int}:
        dtype = "Int64" if has_missing else "int64"
        return pd.Series([pd.NA if _is_missing(v) else v for v in values], index=index, dtype=dtype)
    if kinds <= {int, float}:
        return pd.Series([math.nan if _is_missing(v) else float(v) for v in values], index=index, dtype=float)
    if kinds == {str}:
        return pd.Series(values, index=index, dtype="str")
    return pd.Series(values, index=index, dtype=object)
