"""One loader: whatever names a model (an export, a training checkpoint, a backbone) -> an embedding model.

:func:`load` accepts

* a folder written by ``mme5 export`` (``mme5_config.json`` beside the merged weights): its saved
  :class:`~mme5.model.settings.EncoderSettings` and instructions;
* a ``.ckpt`` written by ``mme5 fit``: the Encoder built from ``hyper_parameters["encoder"]`` with the
  ``encoder.*`` weights of its ``state_dict`` (read with ``torch.load(weights_only=True)``);
* a Hugging Face model folder, a cached hub id or a tiny twin name (``tiny-llava``): Encoder defaults.

``mme5.load``, ``mme5 evaluate``, ``mme5 export`` (checkpoint -> folder) and the synthesis image
embedder all load through it.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, cast

import torch
from PIL import Image
from torch import nn

from mme5.errors import ConfigError, MissingPathError
from mme5.model.encoder import Encoder
from mme5.model.settings import DType, EncoderSettings, Quantization
from mme5.records import Side, compose_text, decode_image

CONFIG_FILE = "mme5_config.json"
#: 2: the encoder settings are stored whole under "encoder".
FORMAT_VERSION = 2
#: Inputs with more batches than this show a progress bar when ``progress`` is None.
PROGRESS_MIN_BATCHES = 4


def is_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by ``mme5 export``."""
    return (Path(path) / CONFIG_FILE).is_file()


ImageLike = Image.Image | str | os.PathLike | bytes | None


def _as_side(text: str | None, image: ImageLike, instruction: str | None) -> Side:
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise MissingPathError(f"image '{path}' does not exist")
        data = path.read_bytes()
        return Side(
            compose_text(instruction, text), decode_image(data), data, path.suffix.lstrip(".") or "jpg"
        )
    if isinstance(image, bytes):
        return Side(compose_text(instruction, text), decode_image(image), image)
    if image is not None and not isinstance(image, Image.Image):
        raise TypeError(f"images must be PIL images, paths, bytes or None; got {type(image).__name__}")
    return Side(compose_text(instruction, text), image.convert("RGB") if image is not None else None)


class EmbeddingModel(nn.Module):
    """An exported mme5 model: ``encode`` texts and/or images into normalised embeddings.

    Load with :func:`load` (or :func:`mme5.load`); ``encoder`` is the underlying
    :class:`~mme5.model.encoder.Encoder`.
    """

    def __init__(self, encoder: Encoder, config: dict[str, Any]):
        super().__init__()
        self.encoder = encoder
        self.config = config
        self.instructions: dict[str, str] = dict(config.get("instructions", {}))

    def resolve_instruction(self, instruction: str | None) -> str | None:
        """A task name from the saved instructions (e.g. "retrieval") -> its text; other strings as given."""
        if instruction is None:
            return None
        return self.instructions.get(instruction, instruction)

    def encode(
        self,
        texts: str | Sequence[str | None] | None = None,
        images: ImageLike | Sequence[ImageLike] = None,
        instruction: str | None = None,
        batch_size: int = 32,
        progress: bool | None = None,
    ) -> torch.Tensor:
        """Embed texts, images, or (text, image) pairs -> float32 CPU tensor [n, D] (normalised).

        A single text or image (not in a list) counts as a list of one.

        Args:
            texts: one text or a list (entries may be None for image-only items).
            images: one image or a list (PIL images, file paths, encoded bytes, or None for text-only).
                With both lists, item i is the pair (texts[i], images[i]).
            instruction: prepended to every text (``{instruction}\\n{text}``); a saved task name such
                as "retrieval" selects that task's instruction.
            batch_size: items per forward pass.
            progress: show a progress bar (None: only for more than a few batches).
        """
        text_list = [texts] if isinstance(texts, str) else (list(texts) if texts is not None else None)
        image_list: list[ImageLike] | None
        if images is None:
            image_list = None
        elif isinstance(images, (list, tuple)):
            image_list = list(images)
        else:
            image_list = [cast(ImageLike, images)]
        if text_list is None and image_list is None:
            raise ValueError("encode needs texts, images, or both")
        n = len(text_list) if text_list is not None else len(image_list)  # type: ignore[arg-type]
        if text_list is not None and image_list is not None and len(image_list) != n:
            raise ValueError(
                f"encode got {n} texts but {len(image_list)} images; pass one image (or None) per text"
            )
        text_list = text_list if text_list is not None else [None] * n
        if image_list is None:
            image_list = [None for _ in range(n)]
        prompt = self.resolve_instruction(instruction)
        sides = [_as_side(t, im, prompt) for t, im in zip(text_list, image_list, strict=True)]
        for i, side in enumerate(sides):
            if not side.text and not side.has_image:
                raise ValueError(f"encode: item {i} has neither text nor image")
        return self.encode_sides(sides, batch_size=batch_size, progress=progress)

    def encode_sides(
        self, sides: list[Side], batch_size: int = 32, progress: bool | None = None
    ) -> torch.Tensor:
        """Embed prepared :class:`~mme5.records.Side` objects -> float32 CPU tensor [n, D]."""
        if progress is None:
            progress = len(sides) > PROGRESS_MIN_BATCHES * batch_size
        return self.encoder.encode_sides(sides, batch_size=batch_size, progress=progress)

    def fingerprint(self) -> str:
        """The encoder's fingerprint (weights and embedding settings; the evaluation cache key)."""
        return self.encoder.fingerprint()


def read_export_config(folder: Path) -> dict[str, Any]:
    """The ``mme5_config.json`` of an export folder, checked for this format."""
    config_file = folder / CONFIG_FILE
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"'{config_file}' is not a readable mme5 export config: {exc}") from None
    version = config.get("format") if isinstance(config, dict) else None
    if version != FORMAT_VERSION:
        raise ConfigError(
            f"'{config_file}' has export format {version!r}; this mme5 reads format "
            f"{FORMAT_VERSION}: re-export the model with `mme5 export`"
        )
    if not isinstance(config.get("encoder"), dict):
        raise ConfigError(
            f"'{config_file}' has no \"encoder\" settings; re-export the model with `mme5 export`"
        )
    return config


def read_checkpoint(path: str | os.PathLike) -> tuple[EncoderSettings, dict[str, torch.Tensor]]:
    """The encoder settings and ``encoder.*`` weights of a ``mme5 fit`` checkpoint (without mme5.training)."""
    file = Path(path)
    if not file.is_file():
        raise MissingPathError(f"checkpoint '{file}' does not exist")
    try:
        # a checkpoint of `mme5 fit` holds tensors and plain containers only: no global needs allowing
        ckpt = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"'{file}' is not a usable mme5 checkpoint ({first})") from None
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if (
        not isinstance(hparams, dict)
        or not isinstance(hparams.get("encoder"), dict)
        or not isinstance(state, dict)
    ):
        raise ConfigError(
            f"'{file}' is not a checkpoint written by `mme5 fit` (expected hyper_parameters"
            f"['encoder'] and a state_dict)"
        )
    settings = EncoderSettings.from_dict(dict(hparams["encoder"]), source=str(file))
    weights = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    if not weights:
        raise ConfigError(f"'{file}' holds no encoder weights (state_dict keys 'encoder.*')")
    return settings, weights


def load_checkpoint_encoder(path: str | os.PathLike, **overrides: Any) -> Encoder:
    """The Encoder a ``mme5 fit`` checkpoint describes, with its trained weights (``overrides`` replace
    settings, e.g. ``dtype``)."""
    settings, weights = read_checkpoint(path)
    encoder = Encoder(replace(settings, **overrides) if overrides else settings)
    result = encoder.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ConfigError(
            f"checkpoint '{path}': its encoder weights do not fit {settings.model} "
            f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})"
        )
    return encoder


def _check_backbone(name: str, path: Path) -> None:
    """A clear error for a name that is neither an export, a model folder, a cached hub id nor a tiny twin."""
    from mme5.backbones import TINY_NAMES, BackboneError, get_adapter

    if path.is_dir() and not (path / "config.json").is_file():
        raise BackboneError(
            f"'{path}' is not an mme5 export: {CONFIG_FILE} is missing (and it is no model "
            f"folder either: config.json is missing)"
        )
    if name in TINY_NAMES or path.exists():
        return
    try:
        get_adapter(name)
    except BackboneError:
        raise MissingPathError(
            f"model '{name}' does not exist: expected an export folder, a checkpoint (*.ckpt), "
            f"a model folder, a cached hub id or a tiny twin name (tiny-<family>)"
        ) from None


def load(
    model: str | os.PathLike,
    dtype: DType | None = None,
    quantization: Quantization | None = None,
    device: str | torch.device | None = None,
    max_length: int | None = None,
) -> EmbeddingModel:
    """Load an export folder, a ``mme5 fit`` checkpoint or a backbone as an :class:`EmbeddingModel`.

    Args:
        model: a folder written by ``mme5 export``, a ``.ckpt`` of ``mme5 fit``, a Hugging Face model
            folder, a cached hub id, or a tiny twin name (``tiny-llava``).
        dtype: override the saved weight dtype ("float32", "bfloat16", "float16").
        quantization: load 8-bit ("int8") or 4-bit ("nf4", "fp4") weights through bitsandbytes (not for
            checkpoints: export them first).
        device: where to run (default: CUDA when available, else CPU; quantized models are placed
            by bitsandbytes).
        max_length: override the saved maximum text tokens per side.
    """
    overrides: dict[str, Any] = {"dtype": dtype, "quantization": quantization, "max_length": max_length}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    path = Path(model)
    config: dict[str, Any] = {}
    if path.suffix == ".ckpt":
        if quantization is not None:
            raise ConfigError(
                f"checkpoint '{path}': quantized loading needs an exported folder (mme5 export)"
            )
        encoder = load_checkpoint_encoder(path, gradient_checkpointing=False, **overrides)
    elif is_export(path):
        config = read_export_config(path)
        saved = EncoderSettings.from_dict(config["encoder"], source=str(path / CONFIG_FILE))
        # the folder holds merged full-precision weights: no adapters; quantized only when asked
        encoder = Encoder(
            replace(
                saved,
                model=str(path),
                lora=None,
                gradient_checkpointing=False,
                quantization=None,
                **overrides,
            )
        )
    else:
        _check_backbone(str(model), path)
        encoder = Encoder(EncoderSettings(model=str(model), **overrides))
    if encoder.quantization is None:
        encoder.to(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    encoder.eval()
    return EmbeddingModel(encoder, config or {"encoder": asdict(encoder.settings)})
