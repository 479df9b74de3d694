"""The one user-facing error type. `main()` functions print it without a traceback."""

from __future__ import annotations


class HousechatError(Exception):
    """An error the user can fix (bad input, missing model, unreachable server).

    The message says what is wrong and how to fix it. Bugs still raise ordinary exceptions.
    """


class DataError(HousechatError):
    """A problem in a data file, located at `path:line`."""

    def __init__(self, path: str, line: int, problem: str, fix: str) -> None:
        self.path, self.line, self.problem, self.fix = path, line, problem, fix
        super().__init__(f"{path}:{line}: {problem} — {fix}")
