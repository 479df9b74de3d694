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
