"""Synthetic training data the mmE5 way: plan, retrieve images, one-pass deep-thinking generation
under a JSON schema, quality gates, resumable shards. Entry point: ``mme5 synthesize``."""

from .backends import Backend, OpenAIServerBackend, SamplingConfig, TransformersBackend, VLLMOfflineBackend
from .gates import GateConfig
from .pipeline import ImageSource, SynthConfig, Synthesizer, synthesize
from .plan import PlanConfig, Planner, SamplePlan, sample_id
from .prompts import PromptConfig, build_prompt
from .schema import StringLimits, generation_schema

__all__ = [
    "Backend",
    "GateConfig",
    "ImageSource",
    "OpenAIServerBackend",
    "PlanConfig",
    "Planner",
    "PromptConfig",
    "SamplePlan",
    "SamplingConfig",
    "StringLimits",
    "SynthConfig",
    "Synthesizer",
    "TransformersBackend",
    "VLLMOfflineBackend",
    "build_prompt",
    "generation_schema",
    "sample_id",
    "synthesize",
]
