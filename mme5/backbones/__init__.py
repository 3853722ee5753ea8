"""Backbone families: pick an adapter by the checkpoint's HF ``model_type`` or a ``tiny-<family>`` name.

>>> adapter = get_adapter("tiny-mllama")        # builds the tiny twin once, then reuses it
>>> adapter.family, adapter.image_token, adapter.path
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mme5.backbones.base import BackboneAdapter, BackboneError, cache_root, truncate_text
from mme5.backbones.llava import LlavaAdapter
from mme5.backbones.llava_next import LlavaNextAdapter
from mme5.backbones.mllama import MllamaAdapter

ADAPTERS: tuple[type[BackboneAdapter], ...] = (MllamaAdapter, LlavaAdapter, LlavaNextAdapter)
try:  # Qwen2-VL is optional in old transformers versions.
    from mme5.backbones.qwen2_vl import Qwen2VLAdapter

    ADAPTERS = (*ADAPTERS, Qwen2VLAdapter)
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


def _config_file(name_or_path: str) -> Path | None:
    """config.json of a local folder, or of a hub id found in the local Hugging Face cache."""
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        return folder / "config.json" if (folder / "config.json").is_file() else None
    if name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/", "~")):
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(name_or_path, "config.json")
        except Exception:
            return None
        if isinstance(found, str):
            return Path(found)
    return None


def get_adapter(name_or_path: str | os.PathLike) -> BackboneAdapter:
    """The adapter for a model folder / cached hub id (by ``model_type``) or a ``tiny-<family>`` twin.

    The returned adapter's ``path`` is where to load the processor and model from. Raises
    :class:`BackboneError` (a ``ValueError``) naming the model and the supported families.
    """
    name = str(name_or_path)
    if name in TINY_NAMES:
        adapter = TINY_NAMES[name]()
        adapter.path = adapter.ensure_tiny()
        return adapter
    config_file = _config_file(name)
    if config_file is None:
        where = (
            "folder has no config.json"
            if Path(name).expanduser().is_dir()
            else "no such folder or cached hub model"
        )
        raise BackboneError(f"backbone '{name}' not found ({where}); {_supported()}")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (OSError, json.JSONDecodeError) as exc:
        raise BackboneError(f"backbone '{name}': cannot read {config_file}: {exc}") from None
    cls = SUPPORTED_MODEL_TYPES.get(model_type)
    if cls is None:
        raise BackboneError(f"backbone '{name}' has unsupported model_type '{model_type}'; {_supported()}")
    local = Path(name).expanduser()
    return cls(str(local) if local.is_dir() else name)


__all__ = [
    "ADAPTERS",
    "SUPPORTED_MODEL_TYPES",
    "TINY_NAMES",
    "BackboneAdapter",
    "BackboneError",
    "LlavaAdapter",
    "LlavaNextAdapter",
    "MllamaAdapter",
    "cache_root",
    "get_adapter",
    "truncate_text",
]
