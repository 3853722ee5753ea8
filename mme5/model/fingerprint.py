"""The fingerprint of a model: a stable hash of everything that changes its embeddings.

That is its weights, the settings that change an embedding (pooling, maximum length, dtype,
quantization), the processor and tokenizer files of the folder it loads from (image size, resampling,
vocabulary, chat template, ...), its ``config.json`` and the mme5 version. It keys the evaluation
embedding cache (:class:`~mme5.eval.cache.EmbeddingCache`): the
:class:`~mme5.model.encoder.Encoder`, the evaluation callbacks and the model loader all use
:func:`fingerprint`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: Above this many frozen elements, each frozen tensor contributes its sum and a strided sample instead of
#: every value (trainable tensors, e.g. LoRA adapters, are always hashed in full).
FULL_HASH_LIMIT = 100_000_000
SAMPLE_SIZE = 4096
#: Files of a model folder that change how a side becomes model inputs (or how the model reads them):
#: hashed whole, by name and content.
PROCESSOR_FILES: tuple[str, ...] = (
    "config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "image_processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template*",
    "vocab.*",
    "merges.txt",
    "tokenizer.model",
    "*.tiktoken",
    "spiece.model",
    "mme5_config.json",
)


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _model_folder(source: str | os.PathLike) -> Path | None:
    """The local folder ``source`` names: a folder, or a hub id's snapshot in the Hugging Face cache."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        return folder
    name = str(source)
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(name, "config.json")
        except Exception:  # no hub client, or a malformed id: nothing local to hash
            return None
        if isinstance(found, str):
            return Path(found).parent
    return None


def processor_digest(source: str | os.PathLike | None) -> str:
    """A hash of the processor, tokenizer and config files (:data:`PROCESSOR_FILES`) of the model folder
    ``source`` (a folder or a cached hub id); ``""`` when there is no local folder to read."""
    folder = _model_folder(source) if source else None
    if folder is None:
        return ""
    h = hashlib.blake2b(digest_size=16)
    names = sorted(
        p.name
        for p in folder.iterdir()
        if p.is_file() and any(fnmatch.fnmatch(p.name, pattern) for pattern in PROCESSOR_FILES)
    )
    for name in names:
        data = (folder / name).read_bytes()
        h.update(f"{name}|{len(data)}|".encode())
        h.update(data)
    return h.hexdigest()


def _version() -> str:
    from mme5 import __version__

    return __version__


def fingerprint(
    model: nn.Module, settings: dict[str, Any] | str = "", source: str | os.PathLike | None = None
) -> str:
    """A 32-character hash of ``model``'s state (parameters, buffers, quantization states), ``settings``,
    the processor files of ``source`` and the mme5 version.

    ``settings`` (JSON-able values, or a string) holds what changes the embeddings beyond the weights:
    pooling, maximum length, dtype, quantization. ``source`` is the folder (or cached hub id) the
    processor and tokenizer load from; when it is not given, ``settings["path"]`` is used (the
    :class:`~mme5.model.encoder.Encoder` puts its model folder there). Its
    :data:`PROCESSOR_FILES` are hashed by content (:func:`processor_digest`). Every tensor contributes
    its name, shape and dtype and its values: all of them, unless the frozen ones hold more than
    :data:`FULL_HASH_LIMIT` elements, in which case each frozen tensor contributes its float64 sum and an
    evenly strided sample.
    """
    if source is None and isinstance(settings, dict) and isinstance(settings.get("path"), str):
        source = settings["path"]
    h = hashlib.blake2b(digest_size=16)
    h.update(type(model).__qualname__.encode())
    h.update(f"mme5={_version()}|processor={processor_digest(source)}|".encode())
    h.update(
        (
            settings if isinstance(settings, str) else json.dumps(settings, sort_keys=True, default=str)
        ).encode()
    )
    state = sorted(model.state_dict().items())
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    frozen_numel = sum(t.numel() for name, t in state if name in frozen or not isinstance(t, torch.Tensor))
    sample_frozen = frozen_numel > FULL_HASH_LIMIT
    with torch.no_grad():
        for name, value in state:
            if not isinstance(value, torch.Tensor):  # e.g. extra state of a quantized layer
                h.update(f"{name}={value!r}".encode())
                continue
            t: Any = value.detach()
            if hasattr(t, "full_tensor"):  # sharded (FSDP2): every rank gathers each weight, in this order
                t = t.full_tensor()
            h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
            if t.numel() == 0:
                continue
            if sample_frozen and name in frozen:
                flat = t.reshape(-1)
                total = flat.sum(dtype=torch.float64 if flat.is_floating_point() else torch.int64)
                h.update(_tensor_bytes(total.to(torch.float64)))
                t = flat[:: max(1, flat.numel() // SAMPLE_SIZE)]
            h.update(_tensor_bytes(t))
    return h.hexdigest()
