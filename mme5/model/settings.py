"""The Encoder's settings: one dataclass per group, validated on construction.

:class:`EncoderSettings` is what ``mme5 fit`` reads as ``model.encoder``, what
:class:`~mme5.model.encoder.Encoder` is built from, what a training checkpoint stores
(``hyper_parameters["encoder"]``) and what an export writes into ``mme5_config.json``. The choices
(:data:`Pooling`, :data:`DType`, :data:`Quantization`) are defined once (quantization beside the
bitsandbytes loading in :mod:`mme5.backbones.base`, which sits below this package) and imported
everywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

import torch

from mme5.backbones.base import QUANTIZATIONS, Quantization
from mme5.errors import ConfigError

Pooling = Literal["last", "mean"]
DType = Literal["float32", "bfloat16", "float16"]
POOLINGS: tuple[str, ...] = get_args(Pooling)
#: dtype name -> torch dtype, for every :data:`DType`.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
assert tuple(DTYPES) == get_args(DType)

__all__ = [
    "DTYPES",
    "POOLINGS",
    "QUANTIZATIONS",
    "DType",
    "EncoderSettings",
    "LoraSettings",
    "Pooling",
    "Quantization",
    "check_choice",
]


def check_choice(field: str, value: Any, allowed: tuple[Any, ...]) -> None:
    """Raise a :class:`ConfigError` naming ``field`` when ``value`` is not one of ``allowed``."""
    if value not in allowed:
        raise ConfigError(f"{field} '{value}' is not supported; expected one of {list(allowed)}")


@dataclass
class LoraSettings:
    """LoRA / DoRA adapter settings (mmE5: rank 8, alpha 64, dropout 0.1, DoRA with gaussian init)."""

    rank: int = 8
    """Adapter rank r."""
    alpha: int = 64
    """Scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = 0.1
    """Dropout on the adapter input."""
    use_dora: bool = False
    """Weight-decomposed LoRA (DoRA)."""
    init: Literal["gaussian"] | bool = "gaussian"
    """peft ``init_lora_weights``: "gaussian" or True (Kaiming-uniform A, zero B)."""
    targets: list[str] | None = None
    """Module-name patterns (regexes matched at the end of dotted names); None: the backbone's default."""

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"lora.rank must be >= 1, got {self.rank}")
        if self.alpha <= 0:
            raise ConfigError(f"lora.alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if self.init not in ("gaussian", True, False):
            raise ConfigError(f"lora.init '{self.init}' is not supported; expected 'gaussian', true or false")


@dataclass
class EncoderSettings:
    """The backbone and how it embeds (the ``model.encoder`` group)."""

    model: str = "tiny-mllama"
    """Model folder or cached hub id (mllama, llava, llava_next, qwen2_vl, ...) or a tiny twin
    (tiny-mllama)."""
    pooling: Pooling = "last"
    """``last``: hidden state of the last non-pad token; ``mean``: mean over non-pad tokens."""
    normalize: bool = True
    """L2-normalise the embeddings."""
    lora: LoraSettings | None = None
    """LoRA / DoRA adapters (only they train); null trains every weight."""
    dtype: DType = "float32"
    """Weight dtype of the backbone (and compute dtype of 4-bit layers)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory."""
    quantization: Quantization | None = None
    """Load linear layers in 8-bit or 4-bit through bitsandbytes (QLoRA with ``lora``)."""
    max_length: int = 256
    """Maximum text tokens per side (image tokens come on top)."""

    def __post_init__(self) -> None:
        if isinstance(self.lora, dict):  # the dict form of a checkpoint or an export
            self.lora = LoraSettings(**self.lora)
        self.model = str(self.model)
        check_choice("pooling", self.pooling, POOLINGS)
        check_choice("dtype", self.dtype, tuple(DTYPES))
        check_choice("quantization", self.quantization, (*QUANTIZATIONS, None))
        if not isinstance(self.max_length, int) or self.max_length < 1:
            raise ConfigError(f"max_length must be an integer >= 1, got {self.max_length!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "settings") -> EncoderSettings:
        """Settings from their ``asdict`` form; an unknown key is a :class:`ConfigError` naming ``source``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"{source}: unknown encoder settings {unknown}; expected some of {sorted(known)}"
            )
        return cls(**values)
