"""The `mme5` command line: one verb per module (see :mod:`mme5.cli.main`)."""

from mme5.cli.main import main

__all__ = ["main"]
