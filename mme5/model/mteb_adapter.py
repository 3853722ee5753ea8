"""An mteb 2.x encoder for an exported mme5 model: ``mteb.evaluate(MTEBModel(folder), tasks)``.

mteb (``pip install 'mme5[mteb]'``) hands the encoder a ``DataLoader`` of batches: dicts with a
``"text"`` list, an ``"image"`` list of PIL images, or both (fused image+text inputs, as in MIEB's
any2any tasks and ViDoRe's image documents). :class:`MTEBModel` embeds every batch with
:meth:`mme5.model.load.EmbeddingModel.encode` and picks the instruction from the export's saved
instructions (``mme5_config.json`` "instructions"):

1. mteb's own prompt keys, in mteb's order: ``"{task name}-{query|document}"``, the task name,
   ``"{task type}-{query|document}"``, the task type, ``"query"`` / ``"document"``;
2. else (``default_instructions=True``) mme5's task names, as mmE5 evaluates: a text query of a
   retrieval task takes "retrieval", an image-only input of a classification task "classification",
   any other image-only input "image";
3. else no instruction (text-only documents, fused inputs without a saved key).

A name that the export does not hold is skipped, never embedded as text. ``instructions=`` replaces
the export's table (mteb keys or mme5 names -> instruction text).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction
from mteb.types import PromptType

from mme5.model.load import EmbeddingModel, load

__all__ = ["MTEBModel", "mteb_model_meta"]

#: Task types whose query is matched against candidates (mme5's "retrieval" instruction for text queries).
_RETRIEVAL_TYPES = ("Retrieval", "Reranking", "DocumentUnderstanding", "VisionCentricQA")


def _kind(task_type: str) -> str | None:
    if "Classification" in task_type:
        return "classification"
    if any(word in task_type for word in _RETRIEVAL_TYPES):
        return "retrieval"
    return None


def mteb_model_meta(model: EmbeddingModel, name: str, revision: str | None = None) -> ModelMeta:
    """mteb's :class:`ModelMeta` for an mme5 model (cosine similarity, text and image inputs)."""
    encoder = model.encoder
    settings = encoder.settings
    n_parameters = sum(p.numel() for p in encoder.parameters())
    return ModelMeta(
        loader=None,
        name=name,
        revision=revision or model.fingerprint()[:12],
        release_date=None,
        languages=None,
        n_parameters=n_parameters,
        n_embedding_parameters=None,
        memory_usage_mb=None,
        max_tokens=settings.max_length,
        embed_dim=None,
        license=None,
        open_weights=True,
        public_training_code="https://github.com/mme5/mme5",
        public_training_data=None,
        framework=["PyTorch", "Transformers"],
        reference=None,
        similarity_fn_name=cast(ScoringFunction, ScoringFunction.COSINE),
        use_instructions=True,
        training_datasets=None,
        adapted_from=model.config.get("encoder", {}).get("model"),
        modalities=["text", "image"],
    )


class MTEBModel(AbsEncoder):
    """mteb 2.x's ``EncoderProtocol`` over an mme5 export (or a loaded :class:`EmbeddingModel`).

    Args:
        model_name: an export folder (anything :func:`mme5.load` takes) or a loaded model.
        revision: the revision recorded in mteb's results (default: the model's fingerprint).
        device: where to run (as :func:`mme5.load`).
        instructions: mteb keys or mme5 task names -> instruction text (default: the export's).
        default_instructions: fall back to mme5's task names (see the module docstring).
        name: the model name in mteb's results (default: ``mme5/<folder name>``).
        **load_kwargs: passed to :func:`mme5.load` (``dtype``, ``quantization``, ``max_length``).
    """

    def __init__(
        self,
        model_name: str | os.PathLike | EmbeddingModel,
        revision: str | None = None,
        *,
        device: str | None = None,
        instructions: Mapping[str, str] | None = None,
        default_instructions: bool = True,
        name: str | None = None,
        **load_kwargs: Any,
    ) -> None:
        if isinstance(model_name, EmbeddingModel):
            self.model = model_name
            label = name or "mme5/model"
        else:
            self.model = load(model_name, device=device, **load_kwargs)
            label = name or f"mme5/{Path(model_name).name or 'model'}"
        self.instructions: dict[str, str] = dict(
            instructions if instructions is not None else self.model.instructions
        )
        self.default_instructions = default_instructions
        self.mteb_model_meta = mteb_model_meta(self.model, label, revision)

    def instruction_for(
        self, task_metadata: TaskMetadata, prompt_type: PromptType | None, has_text: bool, has_image: bool
    ) -> str | None:
        """The instruction text for a batch of ``task_metadata``'s inputs (None: no instruction)."""
        side = prompt_type.value if prompt_type is not None else None
        task_type = str(task_metadata.type)
        keys = [
            f"{task_metadata.name}-{side}" if side else None,
            task_metadata.name,
            f"{task_type}-{side}" if side else None,
            task_type,
            side,
        ]
        if self.default_instructions:
            kind = _kind(task_type)
            if has_image and not has_text:
                keys.append("classification" if kind == "classification" else "image")
            elif has_text and not has_image and kind == "retrieval" and prompt_type is PromptType.query:
                keys.append("retrieval")
        for key in keys:
            if key is not None and key in self.instructions:
                return self.instructions[key] or None
        return None

    def encode(
        self,
        inputs: Iterable[Mapping[str, Any]],
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Embed mteb's batches (``"text"`` and/or ``"image"`` lists) -> float32 array [n, D]."""
        parts: list[np.ndarray] = []
        for batch in inputs:
            texts = batch.get("text")
            images = batch.get("image")
            if texts is None and images is None:
                raise ValueError(
                    f"mteb batch of {task_metadata.name} has neither 'text' nor 'image' "
                    f"(keys: {sorted(batch)}); mme5 embeds texts and images"
                )
            n = len(texts) if texts is not None else len(images)  # type: ignore[arg-type]
            items: list[dict[str, Any]] = []
            for i in range(n):
                item: dict[str, Any] = {}
                if texts is not None and texts[i]:
                    item["text"] = str(texts[i])
                if images is not None and images[i] is not None:
                    item["image"] = images[i]
                items.append(item)
            prompt = self.instruction_for(
                task_metadata, prompt_type, has_text=texts is not None, has_image=images is not None
            )
            emb = self.model.encode(items, prompt=prompt or "", batch_size=max(n, 1))
            parts.append(emb.float().numpy() if isinstance(emb, torch.Tensor) else np.asarray(emb))
        if not parts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)
