"""What every generation backend takes and returns."""

from __future__ import annotations

import base64
import io
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from PIL import Image

from mme5.errors import Mme5Error

from ..prompts import Prompt


@dataclass
class GenerationRequest:
    """One prompt to answer under a JSON schema."""

    id: str
    prompt: Prompt
    schema: dict[str, Any]
    seed: int


@dataclass
class Generation:
    """A backend's answer: the text (``None`` on failure), token counts, and why it stopped."""

    text: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None


@dataclass
class SamplingConfig:
    """Decoding settings shared by all backends."""

    temperature: float = 0.8
    """Sampling temperature (0: greedy)."""
    top_p: float = 0.95
    """Nucleus sampling mass."""
    max_tokens: int = 1536
    """Most tokens one generation may write (a truncated generation fails schema validation)."""


class BackendError(Mme5Error, RuntimeError):
    """A backend that cannot start: its package is missing, or the model it names cannot be used."""


class Backend(ABC):
    """Turns prompts into JSON texts constrained by each request's schema."""

    name: str = "backend"

    def __init__(self, sampling: SamplingConfig | None = None):
        self.sampling = sampling or SamplingConfig()

    def start(self) -> None:  # noqa: B027 (an optional hook)
        """Load the model / start the engine ahead of the first request (timed apart from generation)."""

    @abstractmethod
    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        """Answers in request order; a failed request gives ``Generation(text=None, error=...)``."""

    def describe(self) -> dict[str, Any]:
        """What the stats report records about the backend."""
        return {"backend": self.name, **self.sampling.__dict__}

    def close(self) -> None:  # noqa: B027 (an optional hook)
        """Release engines, servers or models (a no-op by default)."""


def jpeg_data_url(img: Image.Image, quality: int = 90) -> str:
    """An image as a ``data:image/jpeg;base64,...`` URL (how OpenAI-style APIs take inline images)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
