"""The one way a function becomes a command line: its typed signature and docstring, over jsonargparse.

Every `mme5` verb except ``fit`` / ``validate`` (LightningCLI) and every script in ``tools/`` parses its
arguments with :func:`run_function`: one option per parameter (``--name value``, help from the
docstring's ``Args:``), ``--config FILE.yaml`` for any of them, parse errors raised as jsonargparse's
``ArgumentError`` (which :func:`mme5.errors.run_command` prints as one line).
"""

from __future__ import annotations

import inspect
import logging
import typing
from collections.abc import Callable, Sequence
from typing import Any

from jsonargparse import ArgumentError, ArgumentParser, set_parsing_settings

# Settings dataclasses document their fields with attribute docstrings; show them in `--help` (this also
# applies to LightningCLI's parser, which is jsonargparse's).
set_parsing_settings(docstring_parse_attribute_docstrings=True)


def _summary(fn: Callable[..., Any]) -> str:
    doc = inspect.getdoc(fn)
    return " ".join(doc.split("\n\n")[0].split()) if doc else ""


def _spread_types(fn: Callable[..., Any], spread: Sequence[str]) -> dict[str, type]:
    hints = typing.get_type_hints(fn)
    return {name: hints[name] for name in spread}


def function_parser(
    fn: Callable[..., Any], prog: str, *, positional: bool = False, spread: Sequence[str] = ()
) -> ArgumentParser:
    """The parser of ``fn``'s arguments (see :func:`run_function`)."""
    parser = ArgumentParser(prog=prog, description=_summary(fn), exit_on_error=False)
    parser.add_argument("--config", action="config", help="a YAML file with any of the options below")
    for cls in _spread_types(fn, spread).values():
        parser.add_class_arguments(cls, as_group=False, fail_untyped=True)
    parser.add_function_arguments(
        fn, as_group=False, as_positional=positional, skip=set(spread), fail_untyped=True
    )
    return parser


def run_function(
    fn: Callable[..., Any] | Sequence[Callable[..., Any]],
    argv: Sequence[str],
    prog: str,
    *,
    positional: bool = False,
    spread: Sequence[str] = (),
) -> Any:
    """Parse ``argv`` into ``fn``'s typed arguments, call ``fn`` and return what it returns.

    Args:
        fn: a function with type hints and a docstring (its first paragraph is the ``--help`` summary),
            or several: the first argument then names the one to run (``prog NAME --option value``).
        argv: the arguments (without the program or verb name).
        prog: the name ``--help`` and the error messages show (``mme5 evaluate``, ``bench_kernels.py``).
        positional: required parameters are positional arguments instead of ``--name value`` options.
        spread: parameters typed with a dataclass whose fields become top-level options (``--output_dir``
            rather than ``--settings.output_dir``), so that a flat YAML file configures it.
    """
    if not callable(fn):
        return _run_one_of(list(fn), list(argv), prog, positional)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = function_parser(fn, prog, positional=positional, spread=spread)
    cfg = parser.parse_args(list(argv))
    cfg.pop("config", None)
    init = parser.instantiate(cfg)
    params = inspect.signature(fn).parameters
    kwargs = {name: init[name] for name in params if name not in spread and name in init}
    for name, cls in _spread_types(fn, spread).items():
        fields = getattr(cls, "__dataclass_fields__", None) or inspect.signature(cls).parameters
        kwargs[name] = cls(**{field: init[field] for field in fields if field in init})
    return fn(**kwargs)


def _run_one_of(fns: list[Callable[..., Any]], argv: list[str], prog: str, positional: bool) -> Any:
    by_name = {f.__name__: f for f in fns}
    if argv and argv[0] in by_name:
        return run_function(by_name[argv[0]], argv[1:], f"{prog} {argv[0]}", positional=positional)
    listing = "\n".join(f"  {name:<12} {_summary(f)}" for name, f in by_name.items())
    if argv and argv[0] in ("-h", "--help"):
        print(f"usage: {prog} {{{','.join(by_name)}}} [--help] ...\n\n{listing}")
        raise SystemExit(0)
    got = f"'{argv[0]}'" if argv else "nothing"
    raise ArgumentError(None, f"expected one of {', '.join(by_name)} as the first argument, got {got}")
