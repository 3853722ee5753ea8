"""The Encoder: a vision-language model turned into a text/image embedding model.

Model inputs (from a backbone adapter or the :class:`~mme5.data.collate.Collator`) go through the language
model; the last hidden state is pooled (last non-pad token, or mean over tokens) and L2-normalised.
LoRA / DoRA adapters come from peft, 8-/4-bit weights from bitsandbytes, gradient checkpointing from
the Hugging Face API.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mme5.backbones import BackboneAdapter, BackboneError, get_adapter
from mme5.model.fingerprint import fingerprint
from mme5.model.settings import DTYPES, DType, EncoderSettings, LoraSettings, Pooling, Quantization
from mme5.records import Side

__all__ = [
    "DTYPES",
    "DType",
    "Encoder",
    "EncoderSettings",
    "LoraSettings",
    "Pooling",
    "Quantization",
    "pool_hidden",
]


def pool_hidden(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Pool [n, L, H] hidden states over non-pad tokens: the last one (left or right padding), or the mean."""
    mask = attention_mask.to(hidden.device)
    if pooling == "last":
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = torch.where(mask.bool(), positions, -1).max(dim=1).values
        if bool((last < 0).any()):
            raise ValueError("pooling: a row has no attended token (all-zero attention mask)")
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if pooling == "mean":
        weights = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
    raise ValueError(f"pooling '{pooling}' is not supported; expected 'last' or 'mean'")


class Encoder(nn.Module):
    """Embeds sides (text, image, or both) with a vision-language backbone.

    Built from :class:`~mme5.model.settings.EncoderSettings` (``Encoder(EncoderSettings(model=...))``);
    ``Encoder("tiny-llava", max_length=32)`` is short for
    ``Encoder(EncoderSettings("tiny-llava", max_length=32))``.
    The model is a folder or cached hub id (by its HF ``model_type``: mllama, llava, llava_next, qwen2_vl,
    qwen2_5_vl), or a tiny random twin: tiny-mllama, tiny-llava, tiny-llava-next, tiny-qwen2-vl.
    """

    def __init__(self, settings: EncoderSettings | str = EncoderSettings(), **overrides: Any):  # noqa: B008
        super().__init__()
        if isinstance(settings, str):
            settings = EncoderSettings(model=settings, **overrides)
        elif overrides:
            settings = replace(settings, **overrides)
        self.settings = settings
        self.adapter: BackboneAdapter = get_adapter(settings.model)
        self.processor = self.adapter.load_processor(self.adapter.source)
        base: Any = self.adapter.load_model(
            self.adapter.source, dtype=DTYPES[settings.dtype], quantization=settings.quantization
        )
        base.config.use_cache = False
        head = base.get_output_embeddings()
        if head is not None:  # never used for embeddings: keep it out of optimisers and DDP's unused set
            head.requires_grad_(False)
        if settings.gradient_checkpointing:
            if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x
                base.activation_checkpointing_enable({"use_reentrant": False})
            else:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model: Any = self._add_lora(base, settings.lora) if settings.lora is not None else base
        # Sharded training (FSDP, ZeRO-3) sets this: every forward then runs the same modules in the same
        # order on every rank (see BackboneAdapter.last_hidden_state_lockstep).
        self.lockstep = False
        self._dummies: dict[torch.device, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = {}

    # the settings, read as attributes
    @property
    def model_name(self) -> str:
        return self.settings.model

    @property
    def pooling(self) -> Pooling:
        return self.settings.pooling

    @property
    def normalize(self) -> bool:
        return self.settings.normalize

    @property
    def lora(self) -> LoraSettings | None:
        return self.settings.lora

    @property
    def dtype_name(self) -> DType:
        return self.settings.dtype

    @property
    def quantization(self) -> Quantization | None:
        return self.settings.quantization

    @property
    def max_length(self) -> int:
        return self.settings.max_length

    @property
    def gradient_checkpointing(self) -> bool:
        return self.settings.gradient_checkpointing

    def _add_lora(self, base: nn.Module, lora: LoraSettings) -> nn.Module:
        from peft import LoraConfig, get_peft_model

        from mme5.backbones.base import matching_modules

        pattern = self.adapter.lora_target_regex(lora.targets)
        if not matching_modules(base, pattern):
            raise BackboneError(
                f"LoRA targets {lora.targets or self.adapter.lora_targets} match no module of "
                f"{self.model_name}"
            )
        config = LoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            use_dora=lora.use_dora,
            init_lora_weights=lora.init,
            target_modules=pattern,
            bias="none",
        )
        return get_peft_model(base, config)

    # ---- forward ----------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def base_model(self) -> Any:
        """The transformers model (inside the peft wrapper when LoRA is on)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Model inputs (``input_ids``, ``attention_mask``, image tensors) -> embeddings [n, D]."""
        moved = self._on_device(inputs)
        if self.lockstep:
            dummy_image, dummy_text = self._lockstep_dummies()
            hidden = self.adapter.last_hidden_state_lockstep(
                self.base_model(), moved, dummy_image, dummy_text
            )
        else:
            hidden = self.adapter.last_hidden_state(self.base_model(), moved)
        emb = pool_hidden(hidden, moved["attention_mask"], self.pooling)
        return F.normalize(emb, dim=-1) if self.normalize else emb

    def _on_device(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        device, compute = self.device, DTYPES[self.dtype_name]
        return {
            k: (v.to(device, compute) if torch.is_floating_point(v) else v.to(device))
            for k, v in inputs.items()
            if isinstance(v, torch.Tensor)
        }

    def _lockstep_dummies(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The inputs of one image-only side and one text-only side for :attr:`lockstep` forwards, built
        once per device."""
        device = self.device
        if device not in self._dummies:
            from PIL import Image

            image = self.build_inputs([Side(image=Image.new("RGB", (64, 64), (127, 127, 127)))])
            self._dummies[device] = (
                self._on_device(image),
                self._on_device(self.build_inputs([Side(text=".")])),
            )
        return self._dummies[device]

    def build_inputs(self, sides: list[Side]) -> dict[str, torch.Tensor]:
        """Model inputs for ``sides`` with this encoder's processor and ``max_length``."""
        return self.adapter.build_inputs(self.processor, sides, self.max_length)

    def select_rows(
        self, inputs: dict[str, torch.Tensor], rows: slice | list[int] | torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The inputs of a subset of rows (e.g. a GradCache chunk); image tensors follow their rows."""
        return self.adapter.select_rows(inputs, rows)

    @torch.no_grad()
    def encode_sides(self, sides: list[Side], batch_size: int = 32, progress: bool = False) -> torch.Tensor:
        """Embed ``sides`` in batches without gradients (eval mode, restored afterwards) -> float32 CPU
        [n, D]."""
        was_training = self.training
        self.eval()
        out: list[torch.Tensor] = []
        try:
            starts = range(0, len(sides), batch_size)
            if progress:
                from tqdm.auto import tqdm

                starts = tqdm(starts, desc="encode", unit="batch")
            for start in starts:
                inputs = self.build_inputs(sides[start : start + batch_size])
                out.append(self(inputs).float().cpu())
        finally:
            self.train(was_training)
        if not out:
            return torch.empty(0, self.hidden_size)
        return torch.cat(out)

    def sharding_units(self) -> list[nn.Module]:
        """The backbone's transformer blocks: the modules whose classes its ``_no_split_modules`` name
        (each becomes one FSDP unit)."""
        from transformers import PreTrainedModel

        names: set[str] = set()
        for m in self.base_model().modules():
            if isinstance(m, PreTrainedModel):
                names.update(m._no_split_modules or ())
        return [m for m in self.base_model().modules() if type(m).__name__ in names]

    @property
    def hidden_size(self) -> int:
        config = self.base_model().config
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        return int(text.hidden_size)

    # ---- identity ---------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """A stable hash of the weights and of every setting that changes the embeddings (the evaluation
        cache key; see :func:`mme5.model.fingerprint.fingerprint`)."""
        identity = {k: v for k, v in asdict(self.settings).items() if k != "gradient_checkpointing"}
        identity.update(family=self.adapter.family, path=str(self.adapter.path))
        return fingerprint(self.model, identity)
