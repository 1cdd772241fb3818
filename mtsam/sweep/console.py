"""Timestamped console lines for the sweep driver (kept free of Ray imports: the CLI starts fast)."""

from __future__ import annotations

import sys
import time


class Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def __setstate__(self, state: dict) -> None:
        self.start = time.monotonic()  # a restored sweep counts from its own start

    def stamp(self) -> str:
        s = int(time.monotonic() - self.start)
        return f"[{s // 60:2d}:{s % 60:02d}]"


def say(clock: Clock, text: str) -> None:
    print(f"{clock.stamp()} {text}", file=sys.stdout, flush=True)


def fmt_metric(key: str, value) -> str:
    if value is None:
        return "-"
    if "delta_b" in key:
        return f"{value:+.2f}%"
    return f"{value:.4g}"
