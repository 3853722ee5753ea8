"""Synthetic training data the mmE5 way: plan, retrieve images, one-pass deep-thinking generation
under a JSON schema, quality gates, resumable shards. Entry point: ``tools/synthesize.py``."""

from .backends import Backend, OpenAIServerBackend, SamplingConfig, TransformersBackend, VLLMOfflineBackend
from .gates import GateConfig
from .pipeline import ImageSource, SynthConfig, Synthesizer, synthesize
from .plan import PlanConfig, Planner, SamplePlan, sample_id
from .prompts import PromptConfig, build_prompt
from .schema import StringLimits, generation_schema

__all__ = ["Backend", "OpenAIServerBackend", "SamplingConfig", "TransformersBackend", "VLLMOfflineBackend",
           "GateConfig", "ImageSource", "SynthConfig", "Synthesizer", "synthesize", "PlanConfig", "Planner",
           "SamplePlan", "sample_id", "PromptConfig", "build_prompt", "StringLimits", "generation_schema"]
