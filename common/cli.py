"""The one command-line helper every CLI uses: usage errors are one line, never a traceback.

Example:
    parser = Parser(prog="python -m export", description="...")
    args = parse_args(parser, argv)
    if isinstance(args, int):
        return args  # --help (0) or a usage error (2), already reported
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

# Exit status for usage errors and bad input, as argparse uses it.
EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line on stderr, without the usage block."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> argparse.Namespace | int:
    """Parses `argv`, returning the exit status instead of raising SystemExit.

    In-process callers (tests, the demo calling the client CLI) stay alive: `--help` returns 0
    after printing, a usage error returns 2 after its one line on stderr.
    """
    try:
        return parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE


def fail(prog: str, message: object, status: int = EXIT_USAGE) -> int:
    """Reports an error as one line on stderr (`prog: error: message`) and returns `status`."""
    text = " ".join(str(message).split())
    print(f"{prog}: error: {text}", file=sys.stderr)
    return status
