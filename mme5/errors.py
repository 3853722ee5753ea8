"""Errors a user can cause (bad config value, missing file, malformed data, unsupported model).

The `mme5` command prints these as one line (`mme5 <verb>: error: ...`) instead of a traceback. Raise a
subclass of :class:`Mme5Error` (or the standard exception it also derives from) with a message that
names the thing and what was expected.
"""

from __future__ import annotations

import os
import re
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


_UNION = re.compile(
    r'^Parser key "(?P<key>[^"]+)": Does not validate against any of the Union subtypes '
    r"Subtypes: \[.*?\] Errors: (?P<errors>.*?) Given value type: .*? Given value: (?P<value>.*)$"
)


def short_argument_error(message: str) -> str:
    """jsonargparse's error for a value that fits no member of a union type (``int | None``, a logger
    class), which lists every member's failure, as ``key: what went wrong; got value``."""
    found = _UNION.match(message)
    if found is None:
        return message
    errors = [e.strip() for e in re.split(r"(?:^| )- ", found["errors"]) if e.strip()]
    expected = [
        m.group(1) for e in errors if (m := re.fullmatch(r"Expected a <class '(?:[\w.]+\.)?(\w+)'>", e))
    ]
    problems = [e for e in errors if not e.startswith("Expected a ")]
    what = "; ".join(problems) if problems else "expected " + " or ".join(expected or ["another type"])
    value = found["value"] if len(found["value"]) <= 80 else found["value"][:77] + "..."
    return f"{found['key']}: {what}" + ("" if problems else f"; got {value}")


def _is_argument_error(exc: BaseException) -> bool:
    try:
        from jsonargparse import ArgumentError
    except ImportError:
        return False
    return isinstance(exc, ArgumentError)


def run_command(prog: str, body: Callable[[], object]) -> int:
    """Run a command's ``body``, the only place where errors become one line.

    A user error (see :func:`user_errors`) is printed as ``<prog>: error: ...`` and gives exit code 2
    (``MME5_TRACEBACK=1`` re-raises it with its traceback); an argument error adds where the options are
    listed (``<prog> --help``), never the usage itself. Anything else is a bug and propagates with its
    traceback. ``body`` returns an exit code, or anything else (``None``, a result) for 0.
    """
    try:
        code = body()
    except user_errors() as exc:
        if os.environ.get("MME5_TRACEBACK"):
            raise
        message = " ".join(str(exc).split())
        if _is_argument_error(exc):
            message = short_argument_error(message)
            if "--help" not in message:
                message += f" (the options: {prog} --help)"
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    return code if isinstance(code, int) and not isinstance(code, bool) else 0
