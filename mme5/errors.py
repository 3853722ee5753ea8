"""Errors a user can cause (bad config value, missing file, malformed data, unsupported model).

The `mme5` command prints these as one line (`mme5: error: ...`) instead of a traceback. Raise a
subclass of :class:`Mme5Error` (or the standard exception it also derives from) with a message that
names the thing and what was expected.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


class Mme5Error(Exception):
    """Base class of errors caused by input or configuration, reported without a traceback."""


class ConfigError(Mme5Error, ValueError):
    """A configuration value that cannot work (unknown choice, inconsistent settings)."""


class MissingPathError(Mme5Error, FileNotFoundError):
    """A file or folder the configuration names does not exist."""


class UnsupportedModelError(Mme5Error, ValueError):
    """A model whose family mme5 has no adapter for."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types the command line reports as one line: ours, and Lightning's configuration
    errors (a strategy whose package is missing, a setting it does not support)."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    return (Mme5Error, MisconfigurationException)


def run_command(prog: str, body: Callable[[], int | None]) -> int:
    """Run a command's ``body``; a user error becomes one line ``<prog>: error: ...`` and exit code 2
    (``MME5_TRACEBACK=1`` re-raises it with its traceback)."""
    try:
        return body() or 0
    except user_errors() as exc:
        if os.environ.get("MME5_TRACEBACK"):
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
