"""The fingerprint of a model: a stable hash of its weights and of the settings that change its embeddings.

It keys the evaluation embedding cache (:class:`~mme5.eval.cache.EmbeddingCache`): the
:class:`~mme5.model.encoder.Encoder`, the evaluation callbacks and the model loader all use
:func:`fingerprint`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import nn

#: Above this many frozen elements, each frozen tensor contributes its sum and a strided sample instead of
#: every value (trainable tensors, e.g. LoRA adapters, are always hashed in full).
FULL_HASH_LIMIT = 100_000_000
SAMPLE_SIZE = 4096


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def fingerprint(model: nn.Module, settings: dict[str, Any] | str = "") -> str:
    """A 32-character hash of ``model``'s state (parameters, buffers, quantization states) and ``settings``.

    ``settings`` (JSON-able values, or a string) holds what changes the embeddings beyond the weights:
    pooling, maximum length, dtype, quantization. Every tensor contributes its name, shape and dtype and
    its values: all of them, unless the frozen ones hold more than :data:`FULL_HASH_LIMIT` elements, in
    which case each frozen tensor contributes its float64 sum and an evenly strided sample.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(type(model).__qualname__.encode())
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
