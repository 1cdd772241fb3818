"""What every command-line entry point shares: one-line errors, exit code 2, --debug tracebacks."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .errors import MTSAMError


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        self.exit(2, f"error: {message}\n")


def run_cli(main: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser, argv=None) -> int:
    args = parser.parse_args(argv)
    try:
        return main(args)
    except (MTSAMError, OSError) as exc:
        if getattr(args, "debug", False):
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def one_line(exc: BaseException) -> str:
    """The message's first line; for an error re-raised from a DataLoader worker ("Caught DataError
    in DataLoader worker process 0. Original Traceback ...") the original error's own line."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if lines[0].startswith("Caught ") and "worker" in lines[0] and len(lines) > 1:
        last = lines[-1]
        prefix = f"{type(exc).__module__}.{type(exc).__name__}: "
        return last.removeprefix(prefix).removeprefix(f"{type(exc).__name__}: ")
    return lines[0]
