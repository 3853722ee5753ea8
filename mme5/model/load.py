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
import re
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from mme5.errors import ConfigError, MissingPathError, Mme5Error
from mme5.logs import quiet_loading
from mme5.model.encoder import Encoder
from mme5.model.settings import DType, EncoderSettings, Quantization
from mme5.records import RecordError, Side, compose_text, decode_image

CONFIG_FILE = "mme5_config.json"
#: 2: the encoder settings are stored whole under "encoder".
FORMAT_VERSION = 2
#: Inputs with more batches than this show a progress bar when ``progress`` is None.
PROGRESS_MIN_BATCHES = 4


def is_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by ``mme5 export``."""
    return (Path(path) / CONFIG_FILE).is_file()


#: What an image may be given as: a PIL image, a numpy array (H x W, H x W x 3 or H x W x 4; uint8, or
#: floats in [0, 1]), encoded bytes, a file path, an ``http(s)://`` / ``file://`` URL or a ``data:image/``
#: URI.
ImageLike = Image.Image | np.ndarray | str | os.PathLike | bytes | None
#: One input of :meth:`EmbeddingModel.encode` in sentence-transformers' form: a text, an image, or a
#: dict with ``"text"`` and/or ``"image"``.
InputLike = str | Image.Image | np.ndarray | bytes | os.PathLike | Mapping[str, Any]

#: Seconds to wait for an image URL.
URL_TIMEOUT = 30.0
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tiff", ".tif", ".webp")
#: A string of this shape passed as ``instruction`` is a task name, never free text.
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


class UnknownPromptError(ConfigError):
    """A ``prompt_name`` (or an instruction name) that the model does not hold."""


class ImageInputError(Mme5Error, ValueError):
    """An image input that cannot be read (a missing file, an unreachable URL, an unusable array)."""


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://", "file://", "data:image/"))


def looks_like_image(text: str) -> bool:
    """Whether a string input is an image, by sentence-transformers' rule: a ``data:image/`` URI, an
    ``http(s)`` URL whose path ends in an image suffix, or an existing file with an image suffix."""
    if text.startswith("data:image/"):
        return True
    if " " in text or "\n" in text:
        return False
    lower = text.lower().split("?", 1)[0]
    if text.startswith(("http://", "https://", "file://")):
        return lower.endswith(IMAGE_SUFFIXES)
    return lower.endswith(IMAGE_SUFFIXES) and os.path.isfile(text)


def read_image_url(url: str, timeout: float = URL_TIMEOUT) -> bytes:
    """The bytes behind an ``http(s)://``, ``file://`` or ``data:image/`` URL (urllib, ``timeout`` s)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ImageInputError(f"image URL '{url[:200]}' could not be read: {reason}") from None


def _array_image(array: np.ndarray) -> Image.Image:
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # channels first -> last
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        raise ImageInputError(
            f"a numpy image must be H x W, H x W x 3 or H x W x 4 (or channels first); got shape {a.shape}"
        )
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
            raise ImageInputError(f"a numpy image must hold numbers; got dtype {a.dtype}")
        scale = (
            255.0 if np.issubdtype(a.dtype, np.floating) and float(np.nanmax(a, initial=0)) <= 1.0 else 1.0
        )
        a = np.clip(np.nan_to_num(a.astype(np.float64)) * scale, 0, 255).round().astype(np.uint8)
    return Image.fromarray(a).convert("RGB")


def _decode(data: bytes, what: str) -> Image.Image:
    try:
        return decode_image(data)
    except RecordError as exc:
        raise ImageInputError(f"image {what}: {exc}") from None


def _as_side(text: str | None, image: ImageLike, instruction: str | None) -> Side:
    composed = compose_text(instruction, text)
    if isinstance(image, str) and _is_url(image):
        data = read_image_url(image)
        return Side(composed, _decode(data, f"URL '{image[:200]}'"), data)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise MissingPathError(f"image '{path}' does not exist")
        data = path.read_bytes()
        return Side(composed, _decode(data, f"'{path}'"), data, path.suffix.lstrip(".") or "jpg")
    if isinstance(image, bytes):
        return Side(composed, _decode(image, "bytes"), image)
    if isinstance(image, np.ndarray):
        return Side(composed, _array_image(image))
    if image is not None and not isinstance(image, Image.Image):
        raise TypeError(
            f"images must be PIL images, numpy arrays, paths, URLs, bytes or None; got {type(image).__name__}"
        )
    return Side(composed, image.convert("RGB") if image is not None else None)


def _split_input(item: Any, index: int) -> tuple[str | None, ImageLike]:
    """One sentence-transformers input -> (text, image)."""
    if isinstance(item, Mapping):
        unknown = sorted(set(item) - {"text", "image"})
        if unknown:
            raise ConfigError(
                f"encode: input {index} has keys {unknown}; a dict input holds 'text' and/or 'image'"
            )
        text = item.get("text")
        if text is not None and not isinstance(text, str):
            raise TypeError(f"encode: input {index}: 'text' must be a string, got {type(text).__name__}")
        return text, item.get("image")
    if isinstance(item, str):
        return (None, item) if looks_like_image(item) else (item, None)
    if item is None:
        return None, None
    return None, item


def _is_single(inputs: Any) -> bool:
    return isinstance(inputs, (str, bytes, os.PathLike, Image.Image, Mapping)) or (
        isinstance(inputs, np.ndarray) and inputs.dtype != object and inputs.ndim in (2, 3)
    )


class EmbeddingModel(nn.Module):
    """An exported mme5 model: ``encode`` texts and/or images into normalised embeddings.

    Load with :func:`load` (or :func:`mme5.load`); ``encoder`` is the underlying
    :class:`~mme5.model.encoder.Encoder`. :meth:`encode` takes sentence-transformers' arguments.
    """

    def __init__(self, encoder: Encoder, config: dict[str, Any]):
        super().__init__()
        self.encoder = encoder
        self.config = config
        self.instructions: dict[str, str] = dict(config.get("instructions", {}))

    @property
    def prompts(self) -> dict[str, str]:
        """Task name -> instruction (sentence-transformers' ``prompts``)."""
        return self.instructions

    def _unknown(self, name: str, what: str) -> UnknownPromptError:
        known = ", ".join(sorted(self.instructions)) or "none"
        return UnknownPromptError(f"{what} '{name}' is not one of this model's prompts (known: {known})")

    def resolve_instruction(self, instruction: str | None) -> str | None:
        """A task name from the saved instructions (e.g. "retrieval") -> its text; free text as given.

        A single word (letters, digits, ``_ - .``) that is not a saved name is refused
        (:class:`UnknownPromptError`, listing the known names): "retreival" is a typo, not an
        instruction.
        """
        if instruction is None:
            return None
        if instruction in self.instructions:
            return self.instructions[instruction]
        if _NAME.fullmatch(instruction):
            raise self._unknown(instruction, "instruction")
        return instruction

    def resolve_prompt(
        self, prompt: str | None = None, prompt_name: str | None = None, instruction: str | None = None
    ) -> str | None:
        """The instruction text for sentence-transformers' ``prompt`` (free text, wins) or ``prompt_name``
        (a saved name, else :class:`UnknownPromptError`), or mme5's ``instruction``."""
        if prompt is not None:
            return prompt or None
        if prompt_name is not None:
            if prompt_name not in self.instructions:
                raise self._unknown(prompt_name, "prompt_name")
            return self.instructions[prompt_name] or None
        return self.resolve_instruction(instruction)

    def encode(
        self,
        inputs: InputLike | Sequence[InputLike | None] | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | torch.device | None = None,
        normalize_embeddings: bool = False,
        *,
        texts: str | Sequence[str | None] | None = None,
        images: ImageLike | Sequence[ImageLike] = None,
        instruction: str | None = None,
        progress: bool | None = None,
    ) -> np.ndarray | torch.Tensor | list[torch.Tensor]:
        """Embed texts, images or (text, image) pairs, as ``SentenceTransformer.encode`` does.

        ``inputs`` takes sentence-transformers' forms: a text, an image (PIL, numpy array, bytes, path,
        ``http(s)://`` / ``file://`` URL), a dict ``{"text": ..., "image": ...}``, or a list of them; a
        string that is an image URL or an existing image file counts as an image, as there. mme5's
        ``texts=`` / ``images=`` lists (item i is the pair ``(texts[i], images[i])``) work too.

        Args:
            inputs: one input or a list (sentence-transformers' form).
            prompt_name: a saved task name (see :attr:`prompts`, e.g. "retrieval"); an unknown name is
                an error listing the known ones.
            prompt: instruction text (wins over ``prompt_name``); the text becomes
                ``{prompt}\n{text}``, as in training.
            batch_size: items per forward pass.
            show_progress_bar: show a progress bar (None: only for more than a few batches).
            convert_to_numpy: return a float32 numpy array [n, D] (the default); False returns a list
                of tensors.
            convert_to_tensor: return one float32 tensor [n, D] (wins over ``convert_to_numpy``).
            device: run on this device (the model moves there, as in sentence-transformers).
            normalize_embeddings: L2-normalise the vectors (exports that train normalised already are).
            texts: mme5's form: one text or a list (entries may be None for image-only items).
            images: mme5's form: one image or a list (None entries for text-only items).
            instruction: a saved task name or free instruction text (``prompt`` / ``prompt_name`` win).
            progress: same as ``show_progress_bar``.

        A single input (not in a list) returns one vector [D], as in sentence-transformers; text
        longer than the model's ``max_length`` tokens is cut there, with one warning counting the cut
        texts.
        """
        if batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size}")
        pairs, single = self._pairs(inputs, texts, images)
        text_prompt = self.resolve_prompt(prompt, prompt_name, instruction)
        sides = [_as_side(t, im, text_prompt) for t, im in pairs]
        for i, side in enumerate(sides):
            if not side.text and not side.has_image:
                raise ValueError(f"encode: item {i} has neither text nor image")
        if device is not None and self.encoder.quantization is None:
            self.encoder.to(device)
        self._warn_truncated(sides)
        show = show_progress_bar if show_progress_bar is not None else progress
        emb = self.encode_sides(sides, batch_size=batch_size, progress=show)
        if normalize_embeddings:
            emb = F.normalize(emb, dim=-1)
        if single:
            emb = emb[0]
        if convert_to_tensor:
            return emb
        if convert_to_numpy:
            return emb.numpy()
        return list(emb) if not single else emb

    def _pairs(self, inputs: Any, texts: Any, images: Any) -> tuple[list[tuple[str | None, ImageLike]], bool]:
        """The (text, image) of every item, and whether a single item was given (not in a list)."""
        if inputs is not None:
            if texts is not None or images is not None:
                raise ConfigError("encode: pass either inputs or texts= / images=, not both")
            single = _is_single(inputs)
            items = [inputs] if single else list(inputs)
            return [_split_input(item, i) for i, item in enumerate(items)], single
        text_single = isinstance(texts, str)
        text_list = [texts] if text_single else (list(texts) if texts is not None else None)
        image_single = images is not None and not isinstance(images, (list, tuple))
        image_list: list[ImageLike] | None = (
            None if images is None else ([cast(ImageLike, images)] if image_single else list(images))
        )
        if text_list is None and image_list is None:
            raise ValueError("encode needs texts, images, or both")
        n = len(text_list) if text_list is not None else len(image_list)  # type: ignore[arg-type]
        if text_list is not None and image_list is not None and len(image_list) != n:
            raise ValueError(
                f"encode got {n} texts but {len(image_list)} images; pass one image (or None) per text"
            )
        single = (text_single or text_list is None) and (image_single or image_list is None)
        return list(
            zip(text_list or [None] * n, image_list if image_list is not None else [None] * n, strict=True)
        ), single

    def _warn_truncated(self, sides: list[Side]) -> None:
        adapter, processor = self.encoder.adapter, self.encoder.processor
        tokenizer, limit = processor.tokenizer, self.encoder.max_length
        cut = 0
        for side in sides:
            if side.text:
                prompt = adapter.format_text(side)
                if adapter.truncate_prompt(tokenizer, prompt, limit) != prompt:
                    cut += 1
        if cut:
            warnings.warn(
                f"encode: {cut} of {len(sides)} texts are longer than max_length={limit} tokens "
                f"and were truncated to it",
                TruncationWarning,
                stacklevel=3,
            )

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


class TruncationWarning(UserWarning):
    """Texts longer than the model's ``max_length`` were cut to it."""


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


#: The file beside the shards of a sharded (``save_distributed_checkpoint``) Lightning checkpoint.
SHARDED_METADATA = "meta.pt"


def _read_sharded(folder: Path) -> dict[str, Any]:
    """A sharded checkpoint folder (torch.distributed.checkpoint shards + Lightning's ``meta.pt``) as one
    checkpoint dict, gathered on the CPU."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    meta = torch.load(folder / SHARDED_METADATA, map_location="cpu", weights_only=True)
    with tempfile.TemporaryDirectory(prefix="mme5-ckpt-") as tmp:
        whole = Path(tmp) / "whole.pt"
        with warnings.catch_warnings():  # "assuming the intent is to save in a single process"
            warnings.simplefilter("ignore", UserWarning)
            dcp_to_torch_save(folder, whole)
        shards = torch.load(whole, map_location="cpu", weights_only=True)
    if not isinstance(meta, dict) or not isinstance(shards, dict):
        raise ConfigError(f"'{folder}' is not a sharded checkpoint written by `mme5 fit`")
    return {**meta, "state_dict": shards.get("state_dict")}


def read_checkpoint(path: str | os.PathLike) -> tuple[EncoderSettings, dict[str, torch.Tensor]]:
    """The encoder settings and ``encoder.*`` weights of a ``mme5 fit`` checkpoint (without mme5.training).

    Reads a single-file checkpoint and a sharded one (a folder of shards written with
    ``save_distributed_checkpoint``), both with ``weights_only=True``.
    """
    file = Path(path)
    if file.is_dir():
        if not (file / SHARDED_METADATA).is_file():
            raise ConfigError(
                f"'{file}' is a folder, not a checkpoint of `mme5 fit` (a sharded checkpoint folder holds "
                f"{SHARDED_METADATA}); pass the .ckpt file, or an export folder (mme5 export)"
            )
    elif not file.is_file():
        raise MissingPathError(f"checkpoint '{file}' does not exist")
    try:
        # a checkpoint of `mme5 fit` holds tensors and plain containers only: no global needs allowing
        ckpt = (
            _read_sharded(file) if file.is_dir() else torch.load(file, map_location="cpu", weights_only=True)
        )
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
    from mme5.backbones.hub import HubModelError

    try:
        get_adapter(name)
    except HubModelError:
        raise  # it already says how to download the model
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
    with quiet_loading():
        return _load(model, dtype, quantization, device, max_length)


def _load(
    model: str | os.PathLike,
    dtype: DType | None,
    quantization: Quantization | None,
    device: str | torch.device | None,
    max_length: int | None,
) -> EmbeddingModel:
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
        fixed: dict[str, Any] = {"model": str(path), "lora": None, "gradient_checkpointing": False}
        encoder = Encoder(replace(saved, **{"quantization": None, **fixed, **overrides}))
    else:
        _check_backbone(str(model), path)
        encoder = Encoder(EncoderSettings(model=str(model), **overrides))
    if encoder.quantization is None:
        encoder.to(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    encoder.eval()
    return EmbeddingModel(encoder, config or {"encoder": asdict(encoder.settings)})
