"""Export a trained encoder as a Hugging Face-style folder, and load it back for inference.

The folder holds the backbone with LoRA / DoRA merged into its weights (``save_pretrained``), the
processor, and ``mme5_config.json`` (family, pooling, normalisation, maximum length, default
instructions per task), so that :func:`load` reproduces the encoder's embeddings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from mme5.backbones import BackboneError
from mme5.model.encoder import DTYPES, Encoder
from mme5.errors import MissingPathError
from mme5.records import Side, compose_text, decode_image

CONFIG_FILE = "mme5_config.json"
FORMAT_VERSION = 1
#: Instructions in the mmE5 style, one per task (a user's ``instructions`` replace or extend them).
DEFAULT_INSTRUCTIONS: dict[str, str] = {
    "classification": "Represent the given image for classification.",
    "vqa": "Represent the given image with the following question:",
    "retrieval": "Find me an everyday image that matches the given caption:",
    "grounding": "Select the portion of the image that follows the language expression:",
    "image": "Represent the given image.",
    "text": "Represent the given text.",
}
#: Inputs with more batches than this show a progress bar when ``progress`` is None.
PROGRESS_MIN_BATCHES = 4


def _encoder_of(module_or_encoder: nn.Module) -> Encoder:
    if isinstance(module_or_encoder, Encoder):
        return module_or_encoder
    encoder = getattr(module_or_encoder, "encoder", None)
    if isinstance(encoder, Encoder):
        return encoder
    raise TypeError(f"export expects an Encoder or a module with an `.encoder`, got {type(module_or_encoder).__name__}")


def merged_model(encoder: Encoder) -> nn.Module:
    """The encoder's backbone with adapters merged, leaving the live (training) encoder untouched.

    With LoRA / DoRA, a fresh full-precision copy of the base weights is loaded from the backbone's
    path (so QLoRA-trained adapters merge into unquantized weights), the adapter weights are copied
    in, and peft merges them. Without adapters the live model is returned as is.
    """
    if encoder.lora is None:
        return encoder.base_model()
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    dtype = DTYPES[encoder.dtype_name]
    base = encoder.adapter.load_model(encoder.adapter.path, dtype=dtype)
    source = encoder.model
    config = source.peft_config["default"]
    fresh = get_peft_model(base, config)
    state = {k: v.detach().to("cpu", dtype) for k, v in get_peft_model_state_dict(source).items()}
    result = set_peft_model_state_dict(fresh, state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise RuntimeError(f"export: adapter weights did not fit the fresh model: {unexpected[:5]}")
    return fresh.merge_and_unload()


def export(module_or_encoder: nn.Module, out_dir: str | os.PathLike,
           instructions: dict[str, str] | None = None) -> Path:
    """Write ``module_or_encoder`` (an Encoder, or a module with ``.encoder``) to ``out_dir``.

    Args:
        module_or_encoder: the trained encoder (or the LightningModule holding it).
        out_dir: the folder to write (created; existing files are overwritten).
        instructions: task -> instruction; merged over :data:`DEFAULT_INSTRUCTIONS`.

    Returns the folder. Load it with :func:`load`, or as a plain transformers checkpoint.
    """
    encoder = _encoder_of(module_or_encoder)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = merged_model(encoder)
    model.save_pretrained(out)
    encoder.adapter.save_processor(encoder.processor, out)
    config = {
        "format": FORMAT_VERSION,
        "family": encoder.adapter.family,
        "model_type": model.config.model_type,
        "pooling": encoder.pooling,
        "normalize": encoder.normalize,
        "max_length": encoder.max_length,
        "dtype": encoder.dtype_name,
        "image_token": encoder.adapter.image_token,
        "padding_side": encoder.adapter.padding_side,
        "instructions": {**DEFAULT_INSTRUCTIONS, **(instructions or {})},
        "trained_from": {"model": encoder.model_name, "lora": encoder.settings()["lora"]},
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False))
    return out


ImageLike = Image.Image | str | os.PathLike | bytes | None


def _as_side(text: str | None, image: ImageLike, instruction: str | None) -> Side:
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise MissingPathError(f"image '{path}' does not exist")
        data = path.read_bytes()
        return Side(compose_text(instruction, text), decode_image(data), data, path.suffix.lstrip(".") or "jpg")
    if isinstance(image, bytes):
        return Side(compose_text(instruction, text), decode_image(image), image)
    if image is not None and not isinstance(image, Image.Image):
        raise TypeError(f"images must be PIL images, paths, bytes or None; got {type(image).__name__}")
    return Side(compose_text(instruction, text), image.convert("RGB") if image is not None else None)


class EmbeddingModel(nn.Module):
    """An exported mme5 model: ``encode`` texts and/or images into normalised embeddings.

    Load with :func:`load`; ``encoder`` is the underlying :class:`~mme5.model.encoder.Encoder`.
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

    def encode(self, texts: str | Sequence[str | None] | None = None, images: ImageLike | Sequence[ImageLike] = None,
               instruction: str | None = None, batch_size: int = 32, progress: bool | None = None) -> torch.Tensor:
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
        image_list = ([images] if images is not None and not isinstance(images, (list, tuple))
                      else (list(images) if images is not None else None))
        if text_list is None and image_list is None:
            raise ValueError("encode needs texts, images, or both")
        n = len(text_list) if text_list is not None else len(image_list)  # type: ignore[arg-type]
        if text_list is not None and image_list is not None and len(image_list) != n:
            raise ValueError(f"encode got {n} texts but {len(image_list)} images; pass one image (or None) per text")
        text_list = text_list if text_list is not None else [None] * n
        image_list = image_list if image_list is not None else [None] * n
        prompt = self.resolve_instruction(instruction)
        sides = [_as_side(t, im, prompt) for t, im in zip(text_list, image_list)]
        for i, side in enumerate(sides):
            if not side.text and not side.has_image:
                raise ValueError(f"encode: item {i} has neither text nor image")
        return self.encode_sides(sides, batch_size=batch_size, progress=progress)

    def encode_sides(self, sides: list[Side], batch_size: int = 32, progress: bool | None = None) -> torch.Tensor:
        """Embed prepared :class:`~mme5.records.Side` objects -> float32 CPU tensor [n, D]."""
        if progress is None:
            progress = len(sides) > PROGRESS_MIN_BATCHES * batch_size
        return self.encoder.encode_sides(sides, batch_size=batch_size, progress=progress)

    def fingerprint(self) -> str:
        return self.encoder.fingerprint()


def load(path: str | os.PathLike, dtype: str | None = None, quantization: str | None = None,
         device: str | torch.device | None = None) -> EmbeddingModel:
    """Load an exported folder as an :class:`EmbeddingModel`.

    Args:
        path: the folder :func:`export` wrote.
        dtype: override the saved weight dtype ("float32", "bfloat16", "float16").
        quantization: load 8-bit ("int8") or 4-bit ("nf4", "fp4") weights through bitsandbytes.
        device: where to run (default: CUDA when available, else CPU; quantized models are placed
            by bitsandbytes).
    """
    folder = Path(path)
    config_file = folder / CONFIG_FILE
    if not folder.is_dir():
        raise MissingPathError(f"exported model folder '{folder}' does not exist")
    if not config_file.is_file():
        raise BackboneError(f"'{folder}' is not an mme5 export: {CONFIG_FILE} is missing (write one with mme5.model.export.export)")
    config = json.loads(config_file.read_text())
    if config.get("format") != FORMAT_VERSION:
        raise BackboneError(f"'{config_file}' has format {config.get('format')!r}; this mme5 reads format {FORMAT_VERSION}")
    encoder = Encoder(
        model=str(folder), pooling=config["pooling"], normalize=config["normalize"], lora=None,
        dtype=dtype or config["dtype"], quantization=quantization,  # type: ignore[arg-type]
        max_length=int(config["max_length"]),
    )
    if quantization is None:
        encoder.to(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    encoder.eval()
    return EmbeddingModel(encoder, config)



def export_checkpoint(ckpt: str, out: str, instructions: dict[str, str] | None = None) -> str:
    """Export a training checkpoint of ``mme5 fit`` as a Hugging Face-style folder.

    Args:
        ckpt: a Lightning checkpoint written by ``mme5 fit`` (e.g. runs/demo/checkpoints/last.ckpt).
        out: the folder to write (load it with ``mme5.model.export.load``).
        instructions: task -> instruction stored with the model, over the mmE5-style defaults
            (JSON, e.g. '{"retrieval": "Find me an everyday image that matches the given caption:"}').
    """
    from mme5.training.module import EmbeddingModule

    path = Path(ckpt)
    if not path.is_file():
        raise MissingPathError(f"checkpoint '{path}' does not exist")
    module = EmbeddingModule.load_from_checkpoint(str(path), map_location="cpu")
    folder = export(module, out, instructions)
    print(f"exported {path} -> {folder}")
    return str(folder)


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``mme5 export --ckpt CKPT --out DIR [--instructions JSON]``."""
    import jsonargparse

    cli = getattr(jsonargparse, "auto_cli", None) or jsonargparse.CLI
    cli(export_checkpoint, args=list(argv) if argv is not None else None, as_positional=False, prog="mme5 export")
    return 0
