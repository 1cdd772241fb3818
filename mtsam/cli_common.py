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
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
