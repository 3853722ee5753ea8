"""The synthesis run: plan -> images -> prompt -> structured generation -> gates -> shards."""

from __future__ import annotations

import glob
import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mme5.errors import ConfigError, MissingPathError
from mme5.records import Example, Side

from .backends.base import Backend, Generation, GenerationRequest
from .gates import GateConfig, QualityGates, dedup_text
from .images import CallableEmbedder, HistogramEmbedder, ImagePool, ModelEmbedder, NeighbourIndex, embed_pool
from .plan import PlanConfig, Planner, SamplePlan
from .prompts import PromptConfig, build_prompt
from .schema import (
    SchemaError,
    StringLimits,
    generation_schema,
    parse_generation,
    split_modality,
    text_fields,
)
from .writer import ShardOutput, UnitRecord

log = logging.getLogger(__name__)
SOURCE = "mme5-synth"


@dataclass
class ImageSource:
    """Where the real images come from and how document-side images are retrieved."""

    folder: str | None = None
    """A folder of images (searched recursively)."""
    shards: list[str] = field(default_factory=list)
    """WebDataset shards (paths or glob patterns) whose image members form the pool."""
    limit: int | None = None
    """Use only the first N readable images."""
    max_side: int = 1024
    """Images shown to the generator are downscaled to this longest side (shards keep the originals)."""
    embedder: str = "histogram"
    """``histogram`` (weight-free colour layout), ``model:<folder>`` (an mme5 / VLM model) or
    ``module:callable``."""
    negative_rank: int = 1
    """The hard-negative image is the query image's neighbour at this rank (0 = nearest: the positive)."""


@dataclass
class SynthConfig:
    """One synthesis run (everything but the backend)."""

    output_dir: str
    """Folder of the shards, ``sizes.json``, ``stats.json`` / ``stats.md`` and progress records."""
    images: ImageSource
    num_samples: int = 1000
    """Accepted samples to produce."""
    seed: int = 0
    """Seed of the plan; sample ids derive from (seed, index)."""
    indices_per_shard: int = 256
    """Planned samples per unit; each unit's accepted samples make one shard."""
    max_attempts: int | None = None
    """Stop after this many planned samples even if ``num_samples`` is not reached (default: 4 x
    num_samples)."""
    plan: PlanConfig = field(default_factory=PlanConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    strings: StringLimits = field(default_factory=StringLimits)
    gates: GateConfig = field(default_factory=GateConfig)
    overwrite: bool = False
    """Delete a previous run in ``output_dir`` instead of resuming it."""


def load_pool(src: ImageSource) -> ImagePool:
    if bool(src.folder) == bool(src.shards):
        raise ConfigError("images: set exactly one of 'folder' or 'shards'")
    if src.folder:
        return ImagePool.from_folder(src.folder, src.limit, src.max_side)
    paths: list[str] = []
    for pattern in src.shards:
        found = sorted(glob.glob(pattern))
        if not found:
            raise MissingPathError(f"images.shards: no file matches '{pattern}'")
        paths += found
    return ImagePool.from_shards(paths, src.limit, src.max_side)


def make_embedder(spec: str):
    """``histogram`` | ``model:<folder>`` | ``module:callable`` -> an embedder."""
    if spec == "histogram":
        return HistogramEmbedder()
    if spec.startswith("model:"):
        return ModelEmbedder(spec[len("model:") :])
    if ":" in spec:
        return CallableEmbedder(spec)
    raise ConfigError(
        f"images.embedder '{spec}': expected 'histogram', 'model:<folder>' or 'module:callable'"
    )


@dataclass
class Resolved:
    """A plan with its pool images assigned to roles."""

    plan: SamplePlan
    images: dict[str, int]


class Synthesizer:
    """Runs (or resumes) a synthesis into ``config.output_dir``."""

    def __init__(self, config: SynthConfig, backend: Backend):
        if config.num_samples < 1:
            raise ConfigError(f"num_samples must be >= 1, got {config.num_samples}")
        if config.indices_per_shard < 1:
            raise ConfigError(f"indices_per_shard must be >= 1, got {config.indices_per_shard}")
        if config.images.negative_rank < 1:
            raise ConfigError("images.negative_rank must be >= 1 (rank 0 is the positive image)")
        self.config, self.backend = config, backend
        self.output = ShardOutput(config.output_dir)
        self.pool = load_pool(config.images)
        self.planner = Planner(config.plan, config.seed, len(self.pool))
        self._index: NeighbourIndex | None = None

    def run_fingerprint(self) -> dict[str, Any]:
        """What must match for a folder to be resumed: every setting that shapes the samples, flattened."""
        settings = asdict(self.config)
        for key in ("output_dir", "num_samples", "max_attempts", "overwrite"):
            settings.pop(key)
        for key in ("folder", "shards"):  # the pool fingerprint stands for the images, wherever they live
            settings["images"].pop(key)
        flat: dict[str, Any] = {}
        for key, value in settings.items():  # one level: "seed", "plan.languages", "gates.min_score", ...
            for sub, v in value.items() if isinstance(value, dict) else [(None, value)]:
                flat[f"{key}.{sub}" if sub else key] = json.loads(json.dumps(v, default=str))
        # Where the backend runs (URL, device, engine sizes) may change on resume; what it samples may not.
        described = self.backend.describe()
        for key in ("backend", "model", "temperature", "top_p", "max_tokens"):
            flat[f"backend.{key}"] = described.get(key)
        flat["pool"] = self.pool.fingerprint()
        return flat

    def neighbours(self) -> NeighbourIndex:
        if self._index is None:
            emb = embed_pool(
                self.pool,
                make_embedder(self.config.images.embedder),
                cache_dir=Path(self.config.output_dir) / "_cache",
            )
            self._index = NeighbourIndex(emb)
        return self._index

    def resolve(self, plans: list[SamplePlan]) -> list[Resolved]:
        """Assign pool images to the roles each modality needs (document images by retrieval)."""
        rank = self.config.images.negative_rank
        retrieving = sorted({p.anchor for p in plans if "I" in split_modality(p.modality)[1]})
        nn = (
            dict(zip(retrieving, self.neighbours().top_k(retrieving, rank + 1), strict=False))
            if retrieving
            else {}
        )
        out = []
        for plan in plans:
            q, d = split_modality(plan.modality)
            images: dict[str, int] = {}
            if "I" in q:
                images["query"] = plan.anchor
            if "I" in d:
                near = nn[plan.anchor]
                if "I" in q:
                    images["positive"], images["negative"] = near[0], near[rank]
                else:  # text query: the anchor is the positive, its neighbour the hard negative
                    images["positive"], images["negative"] = plan.anchor, near[rank]
            out.append(Resolved(plan, images))
        return out

    def run(self) -> dict[str, Any]:
        """Generate until ``num_samples`` are accepted (or ``max_attempts`` planned); returns the stats."""
        c = self.config
        if c.overwrite:
            self.output.clear()
        self.output.check_run(self.run_fingerprint())
        gates = QualityGates(c.gates)
        done = self.output.done()
        accepted = 0
        unit = 0
        max_attempts = c.max_attempts or 4 * c.num_samples
        # Replay the finished units: their accepted texts seed the near-duplicate index, in order.
        while unit in done:
            if done[unit].truncated and accepted + done[unit].accepted < c.num_samples:
                break  # cut short for an earlier, smaller target: redo it whole
            for text in done[unit].dedup_texts:
                gates.is_duplicate(text)
            accepted += done[unit].accepted
            unit += 1
        start_seconds = 0.0
        if accepted < c.num_samples and unit * c.indices_per_shard < max_attempts:
            t0 = time.perf_counter()
            self.backend.start()
            start_seconds = time.perf_counter() - t0
        if unit:
            log.info("resuming %s: %d unit(s) done, %d samples accepted", c.output_dir, unit, accepted)
        while accepted < c.num_samples and unit * c.indices_per_shard < max_attempts:
            start = unit * c.indices_per_shard
            stop = min(start + c.indices_per_shard, max_attempts)
            record, examples = self.run_unit(unit, start, stop, gates, c.num_samples - accepted)
            self.output.commit(record, examples)
            accepted += record.accepted
            log.info(
                "unit %d [%d, %d): accepted %d / %d (total %d / %d) in %.1f s, rejects %s",
                unit,
                start,
                stop,
                record.accepted,
                record.attempted,
                accepted,
                c.num_samples,
                record.seconds,
                record.rejects,
            )
            unit += 1
        if accepted < c.num_samples:
            log.warning(
                "stopped at max_attempts=%d with %d of %d samples accepted",
                max_attempts,
                accepted,
                c.num_samples,
            )
        return self.output.report(
            {
                "target": c.num_samples,
                "backend": self.backend.describe(),
                "backend_start_seconds": round(start_seconds, 3),
                "pool_images": len(self.pool),
                "pool_skipped": dict(self.pool.skipped),
            }
        )

    def run_unit(
        self, unit: int, start: int, stop: int, gates: QualityGates, needed: int
    ) -> tuple[UnitRecord, list[Example]]:
        c = self.config
        t0 = time.perf_counter()
        resolved = self.resolve(self.planner.plans(start, stop))
        requests = []
        for r in resolved:
            imgs = {role: self.pool.load(i) for role, i in r.images.items()}
            requests.append(
                GenerationRequest(
                    r.plan.id,
                    build_prompt(r.plan, imgs, c.prompt),
                    generation_schema(r.plan.modality, c.strings),
                    r.plan.seed,
                )
            )
        generations = self.backend.generate(requests)
        if len(generations) != len(requests):
            raise RuntimeError(
                f"backend {self.backend.name} returned {len(generations)} answers for "
                f"{len(requests)} requests"
            )
        record = UnitRecord(unit, start, stop)
        rejects: Counter = Counter()
        examples: list[Example] = []
        for r, gen in zip(resolved, generations, strict=False):
            record.prompt_tokens += gen.prompt_tokens
            record.completion_tokens += gen.completion_tokens
            if len(examples) >= needed:
                record.truncated = True  # the target is reached inside this unit; later indices unused
                break
            record.attempted += 1
            reason, example, text = self.accept(r, gen, gates)
            if reason:
                rejects[reason] += 1
                continue
            assert example is not None
            examples.append(example)
            record.ids.append(example.id)
            record.dedup_texts.append(text)
            for key, value in (
                ("by_task", example.task),
                ("by_modality", example.modality),
                ("by_lang", example.lang),
            ):
                counts = getattr(record, key)
                counts[value] = counts.get(value, 0) + 1
        record.accepted = len(examples)
        record.rejects = dict(sorted(rejects.items()))
        record.seconds = time.perf_counter() - t0
        return record, examples

    def accept(
        self, r: Resolved, gen: Generation, gates: QualityGates
    ) -> tuple[str | None, Example | None, str]:
        """(reject reason, example, dedup text) of one generation."""
        plan = r.plan
        if gen.text is None:
            log.warning("sample %s: backend error: %s", plan.id, gen.error)
            return "backend_error", None, ""
        try:
            obj = parse_generation(gen.text, plan.modality, self.config.strings)
        except SchemaError as exc:
            if gen.finish_reason == "length":
                return "truncated", None, ""
            return ("invalid_json" if exc.errors[0].startswith("invalid_json") else "schema"), None, ""
        reason = gates.check(obj, plan.lang)
        if reason:
            return reason, None, ""
        keys = [f"{role}:{self.pool.images[i].key}" for role, i in sorted(r.images.items())]
        text = dedup_text(obj["revised_sample"], keys)
        if gates.is_duplicate(text):
            return "duplicate", None, ""
        return None, self.to_example(r, obj), text

    def to_example(self, r: Resolved, obj: dict[str, Any]) -> Example:
        plan = r.plan
        s = obj["revised_sample"]

        def side(text: str | None, role: str | None) -> Side:
            out = Side(text=text.strip() if text else None)
            if role in r.images:
                out.image_bytes, out.image_ext = self.pool.encoded(r.images[role])
            return out

        has_text = len(text_fields(plan.modality)) > 1
        return Example(
            id=plan.id,
            query=side(s.get("query"), "query"),
            positive=side(s.get("positive"), "positive"),
            negatives=[side(s.get("hard_negative"), "negative")],
            instruction=s["instruction"].strip(),
            task=plan.task,
            modality=plan.modality,
            lang=plan.lang
            if has_text
            else "en",  # image-only sides: the English instruction is the only text
            source=SOURCE,
            meta={
                "index": plan.index,
                "seed": self.config.seed,
                "scores": obj["self_evaluation"],
                "images": {role: self.pool.images[i].key for role, i in r.images.items()},
                "drawn_lang": plan.lang,
            },
        )


def synthesize(config: SynthConfig, backend: Backend) -> dict[str, Any]:
    """Run (or resume) a synthesis; closes the backend afterwards. Returns the stats."""
    try:
        return Synthesizer(config, backend).run()
    finally:
        backend.close()


__all__ = ["ImageSource", "SynthConfig", "Synthesizer", "load_pool", "make_embedder", "synthesize"]
