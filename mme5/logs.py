"""Quiet logs: third-party noise filtered at its source, and ``--verbose`` to bring it back.

The `mme5` command (and the scripts in ``tools/``) call :func:`configure` once, before any work. Quiet (the
default), it filters, each at the place it comes from:

- Hugging Face progress bars (hub downloads, transformers' "Loading weights" and writing bars), through
  ``HF_HUB_DISABLE_PROGRESS_BARS`` (inherited by child processes) and the libraries' own switches;
- bitsandbytes' "MatMul8bitLt: inputs will be cast ..." warning, repeated on every int8 matmul: shown once;
  its CPU backend's hint about an optional hub kernel ("Failed to load CPU gemm_4bit_forward ...");
- Lightning's promotional tips ("💡 Tip: For seamless cloud uploads ..." / litlogger) on every fit, its
  note on counting a schedule's steps, and its warning that the default logger is CSV without tensorboard;
- torch.compile's (dynamo) graph-break warnings, and the profiler's native ``profiler_start`` /
  ``profiler_stop`` lines (see :func:`quiet_native_output`).

``mme5 --verbose <verb>``, ``mme5 <verb> --verbose`` or ``MME5_VERBOSE=1`` leaves everything as the
libraries print it. The choice travels to child processes (spawned evaluation workers, DDP ranks) in
``MME5_VERBOSE``; importing :mod:`mme5.cli.main` in such a child re-applies it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

#: ``1``: verbose (nothing filtered); ``0``: quiet. Set by :func:`configure` for child processes.
ENV = "MME5_VERBOSE"
FLAG = "--verbose"

#: Lightning's rank-zero logger(s) (``rank_zero_info`` logs there), where its tips come from.
LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
LIGHTNING_TIP = "💡 Tip:"
#: Lightning's notes that say nothing about the run: its tips, and how it counts the steps of a schedule.
LIGHTNING_NOTES = (LIGHTNING_TIP, "Loading `train_dataloader` to estimate number of stepping batches")
#: Lightning's warning when its default logger falls back to CSV (the documented default of mme5 fit).
LIGHTNING_CSV_FALLBACK = r"Starting from v1\.9\.0, `tensorboardX` has been removed as a dependency"
#: bitsandbytes' per-call cast warning (logged, not warned, on every int8 matmul with non-fp16 inputs).
BNB_LOGGERS = ("bitsandbytes.autograd._functions",)
BNB_REPEATED = ("MatMul8bitLt: inputs will be cast",)
#: bitsandbytes' CPU backend, on CPUs with AVX512-BF16, offers a hub kernel from the package named
#: ``kernels`` (a name mme5 keeps free: see docs/design.md) on every import: an optional speed-up.
BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
BNB_CPU_HINT = "Failed to load CPU gemm_4bit_forward from kernels-community"
#: dynamo's loggers (graph breaks, recompilations) keep only errors.
DYNAMO_LOGGER = "torch._dynamo"


class _DropPrefixes(logging.Filter):
    """Drops records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: Sequence[str]) -> None:
        super().__init__()
        self.prefixes = tuple(prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


class _Once(logging.Filter):
    """Lets the first record of each message through and drops its repeats."""

    def __init__(self, prefixes: Sequence[str]) -> None:
        super().__init__()
        self.prefixes = tuple(prefixes)
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefixes):
            return True
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        record.msg, record.args = f"{message} (repeats hidden; --verbose shows them)", None
        return True


_FILTERS: list[tuple[logging.Logger, logging.Filter]] = []
_LEVELS: dict[str, int] = {}


def is_verbose() -> bool:
    """Whether this process runs verbose (``MME5_VERBOSE=1``, set by ``--verbose``)."""
    return os.environ.get(ENV, "0").strip().lower() in ("1", "true", "yes")


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Inside: no transformers progress bars ("Loading weights"), unless verbose; restored after.

    For the Python API (``mme5.load``), where :func:`configure` has not run: a 30 kB model should not
    draw a bar on every load.
    """
    if is_verbose():
        yield
        return
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def take_verbose(argv: Sequence[str]) -> tuple[bool, list[str]]:
    """Remove ``--verbose`` from ``argv`` (before a ``--``): returns (whether it was there, the rest)."""
    args = list(argv)
    end = args.index("--") if "--" in args else len(args)
    found = FLAG in args[:end]
    return found, [a for i, a in enumerate(args) if not (i < end and a == FLAG)]


def configure(verbose: bool | None = None) -> bool:
    """Install the quiet filters, or with ``verbose`` remove them; returns the verbosity in force.

    ``verbose=None`` takes it from ``MME5_VERBOSE``. Safe to call again (it replaces what it installed).
    """
    verbose = is_verbose() if verbose is None else verbose
    os.environ[ENV] = "1" if verbose else "0"
    _remove()
    if verbose:
        return True
    # Hugging Face: the hub reads this once at import and transformers follows the hub's switch; children
    # inherit it. An explicit setting by the user wins.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"].strip().lower() in ("1", "true", "yes", "on"):
        if "huggingface_hub" in sys.modules:
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
        if "transformers" in sys.modules:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
    for name in LIGHTNING_LOGGERS:
        _add(name, _DropPrefixes(LIGHTNING_NOTES))
    for name in BNB_LOGGERS:
        _add(name, _Once(BNB_REPEATED))
    _add(BNB_CPU_LOGGER, _DropPrefixes([BNB_CPU_HINT]))
    dynamo = logging.getLogger(DYNAMO_LOGGER)
    _LEVELS[DYNAMO_LOGGER] = dynamo.level
    dynamo.setLevel(logging.ERROR)
    # torch configures its loggers from TORCH_LOGS when it is first imported ("-dynamo": errors only)
    if "torch" not in sys.modules and not os.environ.get("TORCH_LOGS"):
        os.environ["TORCH_LOGS"] = "-dynamo"
    for pattern, module in _WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, module=module)
    return False


#: (message, module) regexes of the warnings filtered when quiet.
_WARNINGS = ((r".*Graph break", r"torch\._dynamo.*"), (LIGHTNING_CSV_FALLBACK, ""))


def _add(name: str, flt: logging.Filter) -> None:
    logger = logging.getLogger(name)
    logger.addFilter(flt)
    _FILTERS.append((logger, flt))


def _remove() -> None:
    while _FILTERS:
        logger, flt = _FILTERS.pop()
        logger.removeFilter(flt)
    ours = {pattern for pattern, _ in _WARNINGS}
    filters: list[Any] = warnings.filters  # type: ignore[assignment]  # a list at runtime
    filters[:] = [f for f in filters if getattr(f[1], "pattern", None) not in ours]
    mutated = getattr(warnings, "_filters_mutated", None)  # what filterwarnings calls (Python <= 3.13)
    if callable(mutated):
        mutated()
    for name, level in _LEVELS.items():
        logging.getLogger(name).setLevel(level)
    _LEVELS.clear()


@contextlib.contextmanager
def quiet_native_output() -> Iterator[None]:
    """Silence what native code writes to the process's stderr (file descriptor 2) inside the block, unless
    verbose: the PyTorch profiler (kineto) prints ``profiler_start`` / ``profiler_stop`` there on every use,
    whatever ``KINETO_LOG_LEVEL`` says. Keep the block to the profiler's start and stop."""
    if is_verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


#: Lightning logger class -> (modules of which one must import, what to install).
LOGGER_PACKAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "TensorBoardLogger": (("tensorboard", "tensorboardX"), "pip install 'mme5[loggers]'"),
    "WandbLogger": (("wandb",), "pip install 'mme5[loggers]'"),
    "MLFlowLogger": (("mlflow",), "pip install mlflow"),
    "CometLogger": (("comet_ml",), "pip install comet-ml"),
    "NeptuneLogger": (("neptune",), "pip install neptune"),
}


def _importable(module: str) -> bool:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def check_logger_packages(logger: Any, option: str = "trainer.logger") -> None:
    """Raise :class:`mme5.errors.ConfigError` when a configured Lightning logger's package is missing.

    Args:
        logger: the ``trainer.logger`` value before instantiation: a ``class_path`` / ``init_args``
            namespace or dict, a list of them, a bool or None (Lightning's default, which picks TensorBoard
            only when it is installed, is always fine).
        option: how the user gave it, for the message.
    """
    from mme5.errors import ConfigError

    items = logger if isinstance(logger, (list, tuple)) else [logger]
    for item in items:
        class_path = item.get("class_path") if hasattr(item, "get") else None
        if not isinstance(class_path, str):
            continue
        name = class_path.rsplit(".", 1)[-1]
        if name not in LOGGER_PACKAGES:
            continue
        modules, install = LOGGER_PACKAGES[name]
        if not any(_importable(m) for m in modules):
            raise ConfigError(
                f"{option}: {name} needs the {' or '.join(modules)} package, which is not installed; "
                f"{install} (or leave {option} out: Lightning's CSV logger needs nothing)"
            )
