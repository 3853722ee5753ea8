"""Backbone families: pick an adapter by the checkpoint's HF ``model_type`` or a ``tiny-<family>`` name.

>>> adapter = get_adapter("tiny-mllama")        # builds the tiny twin once, then reuses it
>>> adapter.family, adapter.image_token, adapter.path
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mme5.backbones.base import BackboneAdapter, BackboneError, cache_root, truncate_text
from mme5.backbones.hub import HubModelError, resolve_hub_model, split_hub_id
from mme5.backbones.llava import LlavaAdapter
from mme5.backbones.llava_next import LlavaNextAdapter
from mme5.backbones.mllama import MllamaAdapter

ADAPTERS: tuple[type[BackboneAdapter], ...] = (MllamaAdapter, LlavaAdapter, LlavaNextAdapter)
try:  # Qwen2-VL is optional in old transformers versions.
    from mme5.backbones.qwen2_vl import Qwen2VLAdapter

    ADAPTERS = (*ADAPTERS, Qwen2VLAdapter)
except ImportError:  # pragma: no cover - depends on the transformers version
    pass
try:  # Qwen3-VL needs transformers >= 4.57.
    from transformers import Qwen3VLForConditionalGeneration as _Qwen3VL  # noqa: F401

    from mme5.backbones.qwen3_vl import Qwen3VLAdapter

    ADAPTERS = (*ADAPTERS, Qwen3VLAdapter)
except ImportError:  # pragma: no cover - depends on the transformers version
    pass

#: ``tiny-<name>`` -> adapter class (``tiny-llava-next`` and ``tiny-qwen2-vl`` use dashes).
TINY_NAMES: dict[str, type[BackboneAdapter]] = {
    "tiny-" + cls.family.replace("_", "-"): cls for cls in ADAPTERS
}
SUPPORTED_MODEL_TYPES: dict[str, type[BackboneAdapter]] = {
    t: cls for cls in ADAPTERS for t in cls.model_types
}


def _supported() -> str:
    return f"supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}; tiny twins: {', '.join(TINY_NAMES)}"


def _config_file(name: str) -> tuple[Path, Path] | None:
    """``(model folder, its config.json)`` for a local folder or a Hub id (downloaded if needed).

    Returns ``None`` for a name that is neither; a folder without config.json gives a missing file.
    """
    folder = Path(name).expanduser()
    if folder.is_dir():
        return folder, folder / "config.json"
    if split_hub_id(name) is None:
        return None
    snapshot = resolve_hub_model(name)
    return snapshot, snapshot / "config.json"


def get_adapter(name_or_path: str | os.PathLike) -> BackboneAdapter:
    """The adapter for a model folder or Hub id (by ``model_type``) or a ``tiny-<family>`` twin.

    A Hub id (``org/name``, or ``org/name@revision`` for a branch, tag or commit) resolves as
    ``from_pretrained`` resolves it: from the Hub cache, downloading what is missing unless
    ``HF_HUB_OFFLINE`` is set (:mod:`mme5.backbones.hub`); the adapter's ``path`` is then the local
    snapshot folder, where the processor and the model load from. Raises :class:`BackboneError` (a
    ``ValueError``) naming the model and the supported families, or
    :class:`~mme5.backbones.hub.HubModelError` with the command that pre-downloads the model.
    """
    name = str(name_or_path)
    if name in TINY_NAMES:
        adapter = TINY_NAMES[name]()
        adapter.path = adapter.ensure_tiny()
        return adapter
    found = _config_file(name)
    if found is None:
        raise BackboneError(
            f"backbone '{name}' not found (no such folder, nor a Hugging Face Hub id org/name); "
            + _supported()
        )
    folder, config_file = found
    if not config_file.is_file():
        raise BackboneError(f"backbone '{name}' not found (folder has no config.json); {_supported()}")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (OSError, json.JSONDecodeError) as exc:
        raise BackboneError(f"backbone '{name}': cannot read {config_file}: {exc}") from None
    cls = SUPPORTED_MODEL_TYPES.get(model_type)
    if cls is None:
        raise BackboneError(f"backbone '{name}' has unsupported model_type '{model_type}'; {_supported()}")
    return cls(str(folder))


__all__ = [
    "ADAPTERS",
    "SUPPORTED_MODEL_TYPES",
    "TINY_NAMES",
    "BackboneAdapter",
    "BackboneError",
    "HubModelError",
    "LlavaAdapter",
    "LlavaNextAdapter",
    "MllamaAdapter",
    "cache_root",
    "get_adapter",
    "truncate_text",
]
