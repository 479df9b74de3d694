"""The one user-facing error type. `main()` functions print it without a traceback."""

from __future__ import annotations

MAX_ECHO_CHARS = 80  # a value quoted back in a message: enough to recognise it, never a flood
MAX_MESSAGE_PART_CHARS = 600  # a problem or a fix, whatever ends up in it


class HousechatError(Exception):
    """An error the user can fix (bad input, missing model, unreachable server).

    The message says what is wrong and how to fix it. Bugs still raise ordinary exceptions.
    """


class DataError(HousechatError):
    """A problem in a data file, located at `path:line`."""

    def __init__(self, path: str, line: int, problem: str, fix: str) -> None:
        problem, fix = clip(problem, MAX_MESSAGE_PART_CHARS), clip(fix, MAX_MESSAGE_PART_CHARS)
        self.path, self.line, self.problem, self.fix = path, line, problem, fix
        super().__init__(f"{path}:{line}: {problem} — {fix}")


class UnknownCategory(DataError):
    """A note or example filed under a category the categories file does not hold (a typo, or a removed one)."""

    def __init__(self, path: str, line: int, category: str, problem: str, fix: str) -> None:
        super().__init__(path, line, problem, fix)
        self.category = category


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def echo(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """A value from a user's file, quoted for a message: its repr, cut to `limit` characters.

    A hostile file cannot make a message (or a log line) huge through the values it echoes.
    """
    if isinstance(value, str) and len(value) > 4 * limit:
        value = value[: 4 * limit]  # repr of a huge string is itself huge: cut before quoting
    return clip(repr(value), limit)
