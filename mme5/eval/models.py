"""Turn what a user points evaluation at into an embedding function.

``model`` may be a Lightning checkpoint (``*.ckpt``, loaded with
``mme5.training.module.EmbeddingModule.load_from_checkpoint``), a folder written by ``mme5 export`` (loaded
with ``mme5.model.export.load``), or a backbone the Encoder can load directly (a Hugging Face model folder,
or a tiny random twin such as ``tiny-llava``).
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mme5.errors import ConfigError, MissingPathError
from mme5.eval.cache import model_fingerprint
from mme5.records import Side

QUANTIZATIONS = ("int8", "nf4", "fp4")


@dataclass
class LoadedModel:
    """An embedding function with the identity the embedding cache keys on."""

    embed: Callable[[list[Side]], Tensor]
    fingerprint: str
    description: str
    module: nn.Module | None = None


def pick_device(device: str) -> torch.device:
    """``auto`` -> the current CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device '{device}' is not a torch device (expected auto, cpu, cuda, cuda:N)") from None


def _fingerprint(obj: Any, fallback_path: Path | None, extra: str) -> str:
    for candidate in (obj, getattr(obj, "encoder", None)):
        fp = getattr(candidate, "fingerprint", None)
        if callable(fp):
            return hashlib.blake2b(f"{fp()}|{extra}".encode(), digest_size=12).hexdigest()
    for candidate in (obj, getattr(obj, "encoder", None), getattr(obj, "model", None)):
        if isinstance(candidate, nn.Module):
            return model_fingerprint(candidate, extra)
    if fallback_path is None:
        raise ConfigError("cannot fingerprint the model for the embedding cache; pass cache_dir=None")
    h = hashlib.blake2b(extra.encode(), digest_size=12)
    for f in sorted(p for p in fallback_path.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(fallback_path)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _is_export(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in ("mme5_export.json", "mme5.json", "pooling.json"))


def load_model(model: str, quantization: str | None = None, device: str = "auto", dtype: str = "float32",
               max_length: int | None = None, batch_size: int = 64) -> LoadedModel:
    """Load ``model`` (checkpoint, exported folder, or backbone) as an embedding function.

    ``quantization`` ("int8", "nf4", "fp4") loads the weights through bitsandbytes; ``dtype`` is
    the weight (and 4-bit compute) dtype of backbones loaded through the Encoder.
    """
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ConfigError(f"quantization '{quantization}' is not supported; expected one of {QUANTIZATIONS} or None")
    dev = pick_device(device)
    path = Path(model)
    extra = f"q={quantization}|dtype={dtype}|max_length={max_length}"
    if path.suffix == ".ckpt":
        if not path.is_file():
            raise MissingPathError(f"checkpoint '{path}' does not exist")
        if quantization is not None:
            raise ConfigError("quantized evaluation needs an exported folder (mme5 export), not a checkpoint")
        from mme5.training.module import EmbeddingModule

        module = EmbeddingModule.load_from_checkpoint(str(path), map_location="cpu").to(dev).eval()
        return LoadedModel(lambda sides: module.embed_sides(sides, batch_size), _fingerprint(module, None, extra),
                           f"checkpoint {path}", module)
    if _is_export(path):
        from mme5.model import export

        kwargs: dict[str, Any] = {}
        params = inspect.signature(export.load).parameters
        for name, value in (("quantization", quantization), ("device", str(dev)), ("dtype", dtype)):
            if name in params:
                kwargs[name] = value
        if quantization is not None and "quantization" not in params:
            raise ConfigError("mme5.model.export.load cannot load quantized weights in this version")
        obj = export.load(str(path), **kwargs)
        return LoadedModel(lambda sides: obj.encode_sides(sides, batch_size), _fingerprint(obj, path, extra),
                           f"exported {path}" + (f" ({quantization})" if quantization else ""),
                           obj if isinstance(obj, nn.Module) else getattr(obj, "encoder", None))
    if not model.startswith("tiny-") and not path.exists():
        raise MissingPathError(f"model '{model}' is neither a checkpoint (*.ckpt), an exported folder, a model "
                               f"folder nor a tiny twin name (tiny-<family>)")
    from mme5.model.encoder import Encoder

    kwargs = {"quantization": quantization, "dtype": dtype}
    if max_length is not None:
        kwargs["max_length"] = max_length
    encoder = Encoder(model, **kwargs)
    if quantization is None:
        encoder = encoder.to(dev)
    return LoadedModel(lambda sides: encoder.encode_sides(sides, batch_size), _fingerprint(encoder, None, extra),
                       f"{model}" + (f" ({quantization})" if quantization else ""), encoder)


def cache_dir_default() -> str:
    """``$MME5_CACHE/embeddings`` or ``.mme5-cache/embeddings``."""
    root = os.environ.get("MME5_CACHE")
    return str(Path(root) / "embeddings") if root else ".mme5-cache/embeddings"
