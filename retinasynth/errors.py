"""User-facing errors.

Every problem caused by the user's input (a path, a file, an option) is raised as a
:class:`RetinaSynthError` whose message is one line: what is wrong, where, and how to fix it.
The CLI prints that line and exits non-zero, without a traceback.
"""

from __future__ import annotations


class RetinaSynthError(Exception):
    """An error in the user's input, with a one-line, actionable message."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class DataError(RetinaSynthError):
    """A dataset folder or file is missing, unreadable or inconsistent."""


class ConfigError(RetinaSynthError):
    """A configuration value or command-line option is invalid."""


class Stopped(Exception):
    """A long job stopped cleanly between units of work because its stop file exists (not an error)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
