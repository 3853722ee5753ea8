"""Turn what a user points evaluation at into an embedding function.

``model`` may be a folder written by ``mme5 export``, a Lightning checkpoint of ``mme5 fit`` (``*.ckpt``),
or a backbone the Encoder loads directly (a Hugging Face model folder, a cached hub id, or a tiny
random twin such as ``tiny-llava``): all of them go through :func:`mme5.model.load.load`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mme5.devices import check_device
from mme5.errors import ConfigError
from mme5.model.load import load
from mme5.model.settings import DType, Quantization
from mme5.records import Side


@dataclass
class LoadedModel:
    """An embedding function with the identity the embedding cache keys on."""

    embed: Callable[[list[Side]], Tensor]
    fingerprint: str
    description: str
    module: nn.Module | None = None
    """The Encoder (its weights, for memory footprints)."""


def pick_device(device: str) -> torch.device:
    """``auto`` -> the current CUDA device when there is one, else the CPU."""
    if device == "auto":
        return (
            torch.device("cuda", torch.cuda.current_device())
            if torch.cuda.is_available()
            else torch.device("cpu")
        )
    check_device(device, option="device")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ConfigError(
            f"device '{device}' is not a torch device (expected auto, cpu, cuda, cuda:N)"
        ) from None


def load_model(
    model: str,
    quantization: Quantization | None = None,
    device: str = "auto",
    dtype: DType | None = None,
    max_length: int | None = None,
    batch_size: int = 64,
) -> LoadedModel:
    """Load ``model`` (exported folder, checkpoint, or backbone) as an embedding function.

    ``quantization`` ("int8", "nf4", "fp4") loads the weights through bitsandbytes; ``dtype`` and
    ``max_length`` override the saved settings (None: the export's or checkpoint's own, Encoder defaults
    for a backbone). The fingerprint covers the weights and every setting that changes the embeddings.
    """
    loaded = load(
        model, dtype=dtype, quantization=quantization, device=pick_device(device), max_length=max_length
    )
    settings = loaded.encoder.settings
    description = (
        f"{model} ({settings.pooling} pooling, {settings.dtype}, max_length {settings.max_length}"
        + (f", {settings.quantization})" if settings.quantization else ")")
    )
    return LoadedModel(
        lambda sides: loaded.encode_sides(sides, batch_size, progress=False),
        loaded.fingerprint(),
        description,
        loaded.encoder,
    )
