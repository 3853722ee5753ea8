"""The one way a function becomes a command line: its typed signature and docstring, over jsonargparse.

Every `mme5` verb except ``fit`` / ``validate`` (LightningCLI) and every script in ``tools/`` parses its
arguments with :func:`run_function`: one option per parameter (``--name value``, help from the
docstring's ``Args:``), ``--config FILE.yaml`` for any of them, parse errors raised as jsonargparse's
``ArgumentError`` (which :func:`mme5.errors.run_command` prints as one line). A list option given one bare
value (``--sizes 256``, ``--datasets X``) is that one-item list, and every option named ``device`` is
checked by :func:`mme5.devices.check_device` before the function runs.
"""

from __future__ import annotations

import collections.abc
import inspect
import json
import logging
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, Literal, Union

import yaml
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
    cfg = parser.parse_args(lists_from_scalars(parser, argv))
    cfg.pop("config", None)
    check_devices(cfg)
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


_SEQUENCES = (
    list,
    tuple,
    set,
    frozenset,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Set,
    collections.abc.Iterable,
    collections.abc.Collection,
)


def _is_list_type(hint: Any) -> bool:
    """A list-like hint: ``list[X]``, ``Sequence[X]``, ``tuple[X, ...]``, ``set[X]``, or one ``| None``."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        return bool(members) and all(_is_list_type(a) for a in members)
    return origin in _SEQUENCES


def _holds_text(hint: Any) -> bool:
    if hint is str:
        return True
    if typing.get_origin(hint) is Literal:
        return any(isinstance(a, str) for a in typing.get_args(hint))
    return any(_holds_text(a) for a in typing.get_args(hint))


def _as_list(value: str, hint: Any) -> str:
    """``value`` as a one-item YAML list, unless it already is a list or null."""
    try:
        loaded = yaml.safe_load(value)
    except yaml.YAMLError:
        loaded = value
    if loaded is None or isinstance(loaded, list):
        return value
    return json.dumps([value]) if _holds_text(hint) else f"[{value}]"


def lists_from_scalars(parser: ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``argv`` with the bare value of each list-typed option (``--sizes 256``) written as a one-item list
    (``--sizes [256]``); lists, ``null``, ``--name+ value`` (append) and other options pass unchanged."""
    hints: dict[str, Any] = {}
    for action in parser._actions:
        hint = getattr(action, "_typehint", None)
        if hint is not None and _is_list_type(hint):
            hints.update({opt: hint for opt in action.option_strings if not opt.endswith("+")})
    args = list(argv)
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if arg == "--":
            out.extend(args[i:])
            break
        if eq and name in hints:
            out.append(f"{name}={_as_list(value, hints[name])}")
        elif arg in hints and i + 1 < len(args) and not args[i + 1].startswith("--"):
            out.extend([arg, _as_list(args[i + 1], hints[arg])])
            i += 1
        else:
            out.append(arg)
        i += 1
    return out


def check_devices(cfg: Any, prefix: str = "") -> None:
    """Check every string option named ``device`` in a parsed config (nested ones too) with
    :func:`mme5.devices.check_device`: ``--device cuda`` without CUDA is one line before any work."""
    from mme5.devices import check_device

    items = cfg.items() if hasattr(cfg, "items") else []
    for key, value in items:
        name = f"{prefix}{key}"
        if str(key).rsplit(".", 1)[-1] == "device" and isinstance(value, str):
            check_device(value, f"--{name}")
        elif hasattr(value, "items"):
            check_devices(value, f"{name}.")
