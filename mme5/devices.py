"""The one check of a ``device`` option: a device the command cannot use stops with one line, before work.

Every verb parsed by :func:`mme5.cli.parsing.run_function` checks each option named ``device`` (also nested,
e.g. a synthesis backend's ``--backend.init_args.device``) with :func:`check_device`; a function that takes
a device from Python can call it too.
"""

from __future__ import annotations

from mme5.errors import ConfigError


class DeviceError(ConfigError):
    """A device that this machine does not have (``cuda`` without a visible CUDA GPU, ``cuda:3`` of 2)."""


def _build() -> str:
    import torch

    return f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"


def check_device(device: str, option: str = "--device") -> str:
    """Return ``device`` if this machine can use it, else raise :class:`DeviceError` naming the fix.

    Args:
        device: ``auto`` (CUDA when there is one), ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or any torch device.
        option: how the user gave it (``--device``), for the message.
    """
    name = str(device).strip().lower()
    if name in ("auto", "cpu"):
        return device
    import torch

    try:
        parsed = torch.device("cuda" if name == "gpu" else name)
    except (RuntimeError, ValueError):
        raise DeviceError(f"{option} {device}: not a device; expected auto, cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"{option} {device}: no CUDA GPU is visible (torch {torch.__version__} is {_build()}); "
                f"run on a GPU machine, or use {option} cpu (or auto: CUDA when there is one)"
            )
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise DeviceError(
                f"{option} {device}: this machine has {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1})"
            )
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"{option} {device}: MPS is not available here; use {option} cpu or auto")
    return device
