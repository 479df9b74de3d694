"""The one shape every `python -m PKG` takes: parse, run, turn errors into exit codes.

0 success, 1 a `HousechatError` (printed without a traceback; its message says how to fix it),
2 a usage error (argparse's own, or `parser.error` from inside the command). Bugs still raise.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from core.errors import HousechatError

USAGE = 2


def run(
    parser: argparse.ArgumentParser,
    command: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse `argv` (default sys.argv[1:]) with `parser` and return `command(args)`'s exit code."""
    try:
        args = parser.parse_args(argv)
        return command(args)
    except SystemExit as exc:  # --help (0) or a usage error (2), never out of main()
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else USAGE)
    except HousechatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


# -- argument types: a bad value is a usage error (exit 2) naming the flag, never a traceback later ---


def positive_int(text: str) -> int:
    """An integer >= 1 (e.g. `--k`)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number (1, 2, ...)")
    return value


def count(text: str) -> int:
    """An integer >= 0 (e.g. `--limit`, where 0 means no limit)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative — give 0 (no limit) or more")
    return value


def port_number(text: str) -> int:
    """A TCP port, 1..65535."""
    value = _int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port — use 1..65535, e.g. 7860")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number") from None
