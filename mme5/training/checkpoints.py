"""Checkpoint files: written atomically in their own folder, read with ``weights_only=True``.

:class:`AtomicCheckpointIO` is the Lightning ``CheckpointIO`` of ``mme5 fit``:

* saving goes through :func:`mme5.atomic.atomic_open`: a unique temporary file beside the checkpoint
  (never in ``$TMPDIR``, so the rename never crosses a file system), fsynced, then renamed over it. A
  reader sees the old checkpoint or the new one, and a kill mid-save leaves the previous one intact;
  the temporary file a killed save left behind is removed by the next save of that checkpoint.
* loading (``--ckpt_path``, Lightning's resume) is :func:`load_checkpoint_file`: ``torch.load`` with
  ``weights_only=True`` and an explicit allow-list of the few non-tensor types Lightning writes
  (:data:`SAFE_GLOBALS`), so a checkpoint can hold tensors and plain data, never code. A missing file,
  a refused one, or one that is empty or cut short stops with one :class:`CheckpointError` line naming
  it (and, for a damaged one, the newest checkpoint in its folder that loads).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.data import AttributeDict

from mme5.atomic import TEMP_SUFFIX, atomic_open
from mme5.errors import Mme5Error
from mme5.records import is_url

#: The only non-tensor, non-builtin types a checkpoint may hold (Lightning's hyperparameter container).
SAFE_GLOBALS: list[Any] = [AttributeDict]


class CheckpointError(Mme5Error, RuntimeError):
    """A checkpoint that cannot be loaded: missing, refused (it holds code or objects), or damaged."""


def _load(path: str | os.PathLike, map_location: Any = None, mmap: bool = False) -> Any:
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)


def loads(path: str | os.PathLike) -> bool:
    """True when ``path`` is a checkpoint that :func:`load_checkpoint_file` would load (tensors mapped,
    not read)."""
    try:
        _load(path, map_location="cpu", mmap=True)
    except Exception:
        return False
    return True


def newest_loadable(folder: str | os.PathLike, skip: str | os.PathLike | None = None) -> Path | None:
    """The most recently written ``*.ckpt`` file in ``folder`` that loads (``skip`` excluded)."""
    found = [p for p in Path(folder).glob("*.ckpt") if p.is_file() and (skip is None or p != Path(skip))]
    for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True):
        if loads(p):
            return p
    return None


def _damaged(path: Path, exc: BaseException) -> CheckpointError:
    size = path.stat().st_size if path.exists() else 0
    what = "is empty (0 bytes)" if size == 0 else f"is damaged or cut short ({size} bytes: {exc})"
    other = newest_loadable(path.parent, skip=path)
    hint = (
        f"the newest checkpoint in its folder that loads is '{other}' (--ckpt_path {other})"
        if other is not None
        else "no other checkpoint in its folder loads"
    )
    return CheckpointError(f"checkpoint '{path}' {what}; {hint}")


def load_checkpoint_file(path: str | os.PathLike, map_location: Any = None) -> dict[str, Any]:
    """A checkpoint's contents, read with ``weights_only=True`` (tensors and plain data only).

    Raises :class:`CheckpointError` (one line, naming the file) when the file is missing, holds
    anything the allow-list refuses (a custom class, a ``__reduce__`` that would call a function:
    nothing of it runs), or is empty or cut short (naming the newest checkpoint beside it that loads).
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(
            f"checkpoint '{p}' does not exist" + (" (it is a folder)" if p.is_dir() else "")
        )
    try:
        state = _load(p, map_location=map_location)
    except pickle.UnpicklingError as exc:
        first = next(
            (ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln or "Unsupported" in ln), ""
        )
        raise CheckpointError(
            f"checkpoint '{p}' refused: it holds Python objects other than tensors and plain data"
            f"{f' ({first})' if first else ''}; mme5 loads checkpoints with weights_only=True and runs "
            "nothing from them"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise _damaged(p, exc) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint '{p}' holds a {type(state).__name__}, not a checkpoint dict")
    return state


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove temporary files a killed save of ``path`` left beside it; returns what was removed.

    Only the one process that writes ``path`` calls this (rank 0 writes a checkpoint).
    """
    target = Path(path)
    removed = []
    for tmp in target.parent.glob(f".{target.name}.*{TEMP_SUFFIX}"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with atomic, in-folder saves and ``weights_only`` loads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        """Write ``checkpoint`` to ``path`` atomically (a URL goes to Lightning's own writer)."""
        if is_url(str(path)) or storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)
        remove_stale_temps(path)
        with atomic_open(path, "wb") as f:
            torch.save(checkpoint, f)

    def load_checkpoint(
        self,
        path: Any,
        map_location: Callable | Any = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Read ``path`` with ``weights_only=True`` whatever the caller asks: :func:`load_checkpoint_file`."""
        if is_url(str(path)):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        return load_checkpoint_file(path, map_location=map_location)


def check_resume_path(ckpt_path: str | os.PathLike | None) -> None:
    """Before a fit starts: an explicit ``--ckpt_path`` must name a checkpoint that loads.

    Lightning's own names (``last``, ``best``, ``hpc``, ``registry``) are resolved by Lightning and
    then read through :class:`AtomicCheckpointIO`; URLs are left to Lightning.
    """
    if ckpt_path is None:
        return
    spec = str(ckpt_path)
    if spec in ("last", "best", "hpc") or spec.startswith("registry") or is_url(spec):
        return
    if not loads(spec):
        load_checkpoint_file(spec, map_location="cpu")  # raises the one-line error for what is wrong
