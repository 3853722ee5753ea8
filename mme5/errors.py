"""Errors a user can cause (bad config value, missing file, malformed data, unsupported model).

The `mme5` command prints these as one line (`mme5 <verb>: error: ...`) instead of a traceback. Raise a
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
    """The exception types a command reports as one line: ours, Lightning's configuration errors (a
    strategy whose package is missing, a setting it does not support) and jsonargparse's argument errors
    (an unknown option, a value of the wrong type). Either package may be absent (bare GPU images)."""
    found: list[type[BaseException]] = [Mme5Error]
    try:
        from lightning.fabric.utilities.exceptions import MisconfigurationException

        found.append(MisconfigurationException)
    except ImportError:
        pass
    try:
        from jsonargparse import ArgumentError

        found.append(ArgumentError)
    except ImportError:
        pass
    return tuple(found)


def run_command(prog: str, body: Callable[[], object]) -> int:
    """Run a command's ``body``, the only place where errors become one line.

    A user error (see :func:`user_errors`) is printed as ``<prog>: error: ...`` and gives exit code 2
    (``MME5_TRACEBACK=1`` re-raises it with its traceback); anything else is a bug and propagates with its
    traceback. ``body`` returns an exit code, or anything else (``None``, a result) for 0.
    """
    try:
        code = body()
    except user_errors() as exc:
        if os.environ.get("MME5_TRACEBACK"):
            raise
        message = " ".join(str(exc).split())
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    return code if isinstance(code, int) and not isinstance(code, bool) else 0
