"""The per-sample configuration: task, modality combination, language and anchor image.

Each draw depends only on (seed, sample index), never on what came before, so any sample can be
re-planned on its own: a resumed run, a second machine working on another index range and a test
all see the same plan.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from mme5.errors import ConfigError

from .languages import language_weights
from .schema import SYNTH_MODALITIES

SYNTH_TASKS = ("classification", "vqa", "retrieval")


def sample_id(seed: int, index: int) -> str:
    """The id of sample ``index`` of a run seeded with ``seed`` (stable across runs and machines)."""
    return f"mme5-synth-s{seed}-{index:09d}"


def sample_rng(seed: int, index: int, stream: str = "plan") -> np.random.Generator:
    """A generator owned by one sample (and one purpose), independent of every other sample."""
    digest = hashlib.blake2b(f"{stream}:{seed}:{index}".encode(), digest_size=16).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


@dataclass
class PlanConfig:
    """How samples are drawn."""

    task_weights: dict[str, float] = field(
        default_factory=lambda: {"classification": 1.0, "vqa": 1.0, "retrieval": 2.0}
    )
    """Relative frequency of each task (mmE5: classification : VQA : retrieval = 1 : 1 : 2)."""
    modality_weights: dict[str, float] = field(default_factory=lambda: {m: 1.0 for m in SYNTH_MODALITIES})
    """Relative frequency of each query->document combination (IT2I, T2IT, IT2IT, I2I, I2T, IT2T, T2I)."""
    language_alpha: float = 0.3
    """Language weights are CC-100 size ** alpha (0: uniform over languages, 1: proportional to data)."""
    languages: list[str] | None = None
    """Restrict the draw to these ISO 639-1 codes (default: all 93 XLM-R languages)."""
    language_weights: dict[str, float] | None = None
    """Explicit unnormalised weights replacing the computed ones for the listed codes."""


@dataclass(frozen=True)
class SamplePlan:
    """What one sample will be: drawn, not yet generated."""

    index: int
    id: str
    task: str
    modality: str
    lang: str
    anchor: int
    """Pool index of the image the sample is built around (query image; the positive for a text query)."""
    seed: int
    """Generation seed of this sample (backends that support per-request seeds use it)."""


def _normalise(
    weights: dict[str, float], allowed: tuple[str, ...], what: str
) -> tuple[list[str], np.ndarray]:
    unknown = [k for k in weights if k not in allowed]
    if unknown:
        raise ConfigError(f"unknown {what}(s) {unknown} in weights; expected keys from {', '.join(allowed)}")
    if any(w < 0 for w in weights.values()):
        raise ConfigError(f"{what} weights must be >= 0, got {weights}")
    keys = [k for k in allowed if weights.get(k, 0) > 0]
    if not keys:
        raise ConfigError(f"all {what} weights are zero; give at least one a positive weight")
    p = np.array([weights[k] for k in keys], dtype=np.float64)
    return keys, p / p.sum()


class Planner:
    """Draws :class:`SamplePlan` s deterministically from (seed, index)."""

    def __init__(self, config: PlanConfig, seed: int, pool_size: int):
        if pool_size < 1:
            raise ConfigError("the image pool is empty; the synthesis needs at least one image")
        self.config = config
        self.seed = seed
        self.pool_size = pool_size
        self.tasks, self.task_p = _normalise(config.task_weights, SYNTH_TASKS, "task")
        self.modalities, self.modality_p = _normalise(config.modality_weights, SYNTH_MODALITIES, "modality")
        lw = language_weights(config.language_alpha, config.language_weights, config.languages)
        self.languages = list(lw)
        self.language_p = np.array([lw[c] for c in self.languages])

    def plan(self, index: int) -> SamplePlan:
        """The plan of sample ``index``."""
        rng = sample_rng(self.seed, index)
        task = self.tasks[rng.choice(len(self.tasks), p=self.task_p)]
        modality = self.modalities[rng.choice(len(self.modalities), p=self.modality_p)]
        lang = self.languages[rng.choice(len(self.languages), p=self.language_p)]
        anchor = int(rng.integers(self.pool_size))
        gen_seed = int(rng.integers(2**31 - 1))
        return SamplePlan(index, sample_id(self.seed, index), task, modality, lang, anchor, gen_seed)

    def plans(self, start: int, stop: int) -> list[SamplePlan]:
        return [self.plan(i) for i in range(start, stop)]

    def expected(self) -> dict[str, dict[str, float]]:
        """The configured probabilities (what plan statistics converge to)."""
        return {
            "task": dict(zip(self.tasks, self.task_p.tolist(), strict=False)),
            "modality": dict(zip(self.modalities, self.modality_p.tolist(), strict=False)),
            "lang": dict(zip(self.languages, self.language_p.tolist(), strict=False)),
        }
