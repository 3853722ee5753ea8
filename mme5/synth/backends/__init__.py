"""Generation backends: vLLM offline engine, an OpenAI-compatible server, local transformers."""

from .base import Backend, BackendError, Generation, GenerationRequest, SamplingConfig
from .openai_server import OpenAIServerBackend
from .transformers_local import TransformersBackend
from .vllm_offline import VLLMOfflineBackend

__all__ = [
    "Backend",
    "BackendError",
    "Generation",
    "GenerationRequest",
    "OpenAIServerBackend",
    "SamplingConfig",
    "TransformersBackend",
    "VLLMOfflineBackend",
]
