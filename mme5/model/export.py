"""Export a trained encoder as a Hugging Face-style folder, and load it back for inference.

The folder holds the backbone with LoRA / DoRA merged into its weights (``save_pretrained``), the
processor, and ``mme5_config.json`` (format 2: the encoder settings whole, family, default
instructions per task), so that :func:`mme5.model.load.load` reproduces the encoder's embeddings.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import nn

from mme5.errors import MissingPathError
from mme5.model.card import model_card
from mme5.model.encoder import DTYPES, Encoder
from mme5.model.load import CONFIG_FILE, FORMAT_VERSION, EmbeddingModel, load, load_checkpoint_encoder
from mme5.model.st_format import (
    embedding_chat_template,
    prompt_layout,
    serving_notes,
    write_chat_template,
    write_sentence_transformers_files,
)

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_INSTRUCTIONS",
    "FORMAT_VERSION",
    "EmbeddingModel",
    "export",
    "export_checkpoint",
    "export_notes",
    "load",
    "merged_model",
]

#: Instructions in the mmE5 style, one per task (a user's ``instructions`` replace or extend them).
DEFAULT_INSTRUCTIONS: dict[str, str] = {
    "classification": "Represent the given image for classification.",
    "vqa": "Represent the given image with the following question:",
    "retrieval": "Find me an everyday image that matches the given caption:",
    "grounding": "Select the portion of the image that follows the language expression:",
    "image": "Represent the given image.",
    "text": "Represent the given text.",
}


def _encoder_of(module_or_encoder: nn.Module) -> Encoder:
    if isinstance(module_or_encoder, Encoder):
        return module_or_encoder
    encoder = getattr(module_or_encoder, "encoder", None)
    if isinstance(encoder, Encoder):
        return encoder
    raise TypeError(
        f"export expects an Encoder or a module with an `.encoder`, got {type(module_or_encoder).__name__}"
    )


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
    base = encoder.adapter.load_model(encoder.adapter.source, dtype=dtype)
    source: Any = encoder.model
    config = source.peft_config["default"]
    fresh = get_peft_model(base, config)
    state = {k: v.detach().to("cpu", dtype) for k, v in get_peft_model_state_dict(source).items()}
    result = set_peft_model_state_dict(fresh, state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise RuntimeError(f"export: adapter weights did not fit the fresh model: {unexpected[:5]}")
    return fresh.merge_and_unload()


def export(
    module_or_encoder: nn.Module,
    out_dir: str | os.PathLike,
    instructions: dict[str, str] | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    repo_id: str | None = None,
) -> Path:
    """Write ``module_or_encoder`` (an Encoder, or a module with ``.encoder``) to ``out_dir``.

    Besides the weights, processor and ``mme5_config.json``, the folder gets the serving files
    (:mod:`mme5.model.st_format`: the embedding chat template and sentence-transformers' module files)
    and a model card (README.md, :mod:`mme5.model.card`).

    Args:
        module_or_encoder: the trained encoder (or the LightningModule holding it).
        out_dir: the folder to write (created; existing files are overwritten).
        instructions: task -> instruction; merged over :data:`DEFAULT_INSTRUCTIONS`.
        checkpoint: the ``mme5 fit`` checkpoint exported (its run's recipe and scores go in the card).
        repo_id: the hub repository the folder is meant for (named in the card's examples).

    Returns the folder. Load it with :func:`load`, sentence-transformers, vLLM or as a plain
    transformers checkpoint; :func:`export_notes` lists what those cannot reproduce.
    """
    encoder = _encoder_of(module_or_encoder)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model: Any = merged_model(encoder)
    model.save_pretrained(out)
    encoder.adapter.save_processor(encoder.processor, out)
    config = {
        "format": FORMAT_VERSION,
        "family": encoder.adapter.family,
        "model_type": model.config.model_type,
        "encoder": asdict(encoder.settings),
        "image_token": encoder.adapter.image_token,
        "padding_side": encoder.adapter.padding_side,
        "instructions": {**DEFAULT_INSTRUCTIONS, **(instructions or {})},
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False))
    write_chat_template(out, embedding_chat_template(encoder.adapter))
    write_sentence_transformers_files(
        out,
        hidden_size=encoder.hidden_size,
        pooling=encoder.pooling,
        normalize=encoder.normalize,
        instructions=config["instructions"],
        dtype=encoder.dtype_name,
    )
    notes = serving_notes(encoder.adapter.family, encoder.processor.tokenizer)
    card = model_card(
        config, layout=prompt_layout(encoder.adapter), notes=notes, ckpt=checkpoint, repo_id=repo_id
    )
    (out / "README.md").write_text(card)
    return out


def export_notes(folder: str | os.PathLike) -> list[str]:
    """The one-line serving limits of an export folder (what sentence-transformers / vLLM cannot
    reproduce), as :func:`export_checkpoint` prints them."""
    from transformers import AutoTokenizer

    config = json.loads((Path(folder) / CONFIG_FILE).read_text())
    return serving_notes(config["family"], AutoTokenizer.from_pretrained(str(folder)))


def export_checkpoint(
    ckpt: str,
    out: str,
    instructions: dict[str, str] | None = None,
    push_to_hub: str | None = None,
    private: bool = False,
) -> str:
    """Export a training checkpoint of ``mme5 fit`` as a Hugging Face-style folder.

    The folder loads with ``mme5.load``, sentence-transformers, transformers and vLLM and carries a
    model card (README.md); one line is printed for each thing a runtime cannot reproduce.

    Args:
        ckpt: a Lightning checkpoint written by ``mme5 fit`` (e.g. runs/demo/checkpoints/last.ckpt, or a
            sharded checkpoint folder).
        out: the folder to write (load it with ``mme5.load``).
        instructions: task -> instruction stored with the model, over the mmE5-style defaults
            (JSON, e.g. '{"retrieval": "Find me an everyday image that matches the given caption:"}').
        push_to_hub: also upload the folder to this Hugging Face Hub model repository (user/name),
            created when missing (huggingface_hub; log in with `hf auth login` or set HF_TOKEN).
        private: create the hub repository private.
    """
    path = Path(ckpt)
    if not path.exists():
        raise MissingPathError(f"checkpoint '{path}' does not exist")
    folder = export(load_checkpoint_encoder(path), out, instructions, checkpoint=path, repo_id=push_to_hub)
    print(f"exported {path} -> {folder}")
    for note in export_notes(folder):
        print(f"note: {note}")
    if push_to_hub:
        from mme5.model.hub import push_to_hub as upload

        print(f"uploaded {folder} -> {upload(folder, push_to_hub, private=private)}")
    return str(folder)
