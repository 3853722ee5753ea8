"""The whole synthesis on CPU: tiny random VLM + xgrammar-constrained decoding -> gates -> shards."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from mme5.records import decode_sample, iter_shard, read_sizes
from mme5.synth import (
    GateConfig,
    ImageSource,
    PlanConfig,
    SamplingConfig,
    StringLimits,
    SynthConfig,
    TransformersBackend,
    synthesize,
)
from mme5.synth.backends.base import GenerationRequest
from mme5.synth.plan import SamplePlan, sample_id
from mme5.synth.prompts import build_prompt
from mme5.synth.schema import SYNTH_MODALITIES, generation_schema, parse_generation, text_fields

#: Strings a random model can only fill with letters and spaces; Latin-script languages pass the script gate.
TINY_STRINGS = StringLimits(max_chars=6, min_chars=1, charset="a-z ")
TINY_LANGS = ["en", "de", "fr", "es", "it"]


def tiny_backend(model: Path | str, max_tokens: int = 320) -> TransformersBackend:
    return TransformersBackend(
        str(model), sampling=SamplingConfig(temperature=1.0, top_p=1.0, max_tokens=max_tokens), threads=1
    )


@pytest.mark.parametrize(
    ("model", "modality"),
    [
        ("own-tiny-llava", "IT2IT"),
        ("own-tiny-llava", "I2I"),
        ("own-tiny-llava", "T2I"),
        ("tiny-llava", "IT2T"),
        ("tiny-mllama", "IT2I"),
        ("tiny-qwen2-vl", "T2IT"),
    ],
)
def test_structured_decoding_gives_schema_valid_json(tiny_vlm, photo_folder, model, modality):
    """A random model writes garbage; under the grammar it still writes JSON of the schema.

    ``own-tiny-llava`` is this suite's twin (sized for vLLM too); the others are mme5.backbones' twins.
    """
    from PIL import Image

    from mme5.synth.prompts import image_roles

    if model.startswith("tiny-"):
        pytest.importorskip("mme5.backbones")
    backend = tiny_backend(tiny_vlm if model == "own-tiny-llava" else model, max_tokens=420)
    img = Image.open(photo_folder / "astronaut.jpg")
    plan = SamplePlan(0, "x", "vqa", modality, "de", 0, 5)
    prompt = build_prompt(plan, {r: img for r in image_roles(modality)})
    schema = generation_schema(modality, TINY_STRINGS)
    outs = backend.generate([GenerationRequest("a", prompt, schema, seed=s) for s in (1, 2, 1)])
    for out in outs:
        assert out.finish_reason == "stop", out.text
        obj = parse_generation(out.text, modality, TINY_STRINGS)  # raises on any violation
        assert list(obj) == schema["required"]  # fields in schema order
        assert set(obj["revised_sample"]) == set(text_fields(modality))
        assert out.completion_tokens > 20 and out.prompt_tokens > 100
    assert outs[0].text != outs[1].text  # seeds differ, samples differ
    assert outs[2].text == outs[0].text  # same seed, same sample


def tiny_config(out: Path, photos: Path, **overrides) -> SynthConfig:
    cfg = {
        "output_dir": str(out),
        "images": ImageSource(folder=str(photos)),
        "num_samples": 8,
        "seed": 3,
        "indices_per_shard": 4,
        "plan": PlanConfig(languages=TINY_LANGS),
        "strings": TINY_STRINGS,
        "gates": GateConfig(min_score=4.0, min_chars=2, dedup_threshold=0.9),
    }
    cfg.update(overrides)
    return SynthConfig(**cfg)


@pytest.mark.slow
def test_pipeline_end_to_end(tiny_vlm, photo_folder, tmp_path):
    out = tmp_path / "synth"
    stats = synthesize(tiny_config(out, photo_folder), tiny_backend(tiny_vlm))
    assert stats["accepted"] == 8
    assert stats["attempted"] == 8 + sum(stats["rejects"].values())
    assert stats["rejects"], "random self-evaluation scores: the score gate must reject some samples"
    assert set(stats["rejects"]) <= {"low_score", "too_short", "duplicate", "degenerate", "truncated"}
    assert stats["completion_tokens"] > 0 and stats["samples_per_second"] > 0

    sizes = read_sizes(out)
    shards = sorted(out.glob("shard-*.tar"))
    assert sorted(sizes) == [p.name for p in shards] and sum(sizes.values()) == 8
    examples = [decode_sample(s) for p in shards for s in iter_shard(p)]
    assert [len(list(iter_shard(p))) for p in shards] == [sizes[p.name] for p in shards]
    ids = [e.id for e in examples]
    assert len(set(ids)) == 8 and ids == sorted(ids)
    assert all(i.startswith("mme5-synth-s3-") for i in ids)
    for ex in examples:
        q, d = ex.modality.split("2")
        assert ex.source == "mme5-synth" and ex.task in ("classification", "vqa", "retrieval")
        assert ex.modality in SYNTH_MODALITIES
        assert ex.instruction and len(ex.negatives) == 1
        assert ex.query.has_image == ("I" in q) and bool(ex.query.text) == ("T" in q)
        for side in (ex.positive, ex.negatives[0]):
            assert side.has_image == ("I" in d) and bool(side.text) == ("T" in d)
        assert ex.lang == (ex.meta["drawn_lang"] if len(text_fields(ex.modality)) > 1 else "en")
        assert ex.meta["drawn_lang"] in TINY_LANGS
        assert ex.id == sample_id(3, ex.meta["index"])
        if "I" in d and "I" in q:  # retrieved neighbours, never the query image itself
            imgs = ex.meta["images"]
            assert len({imgs["query"], imgs["positive"], imgs["negative"]}) == 3
        for side in [ex.query, ex.positive, *ex.negatives]:
            if side.has_image:
                assert side.load_image().size[0] > 0

    report = json.loads((out / "stats.json").read_text())
    assert report["by_task"] == dict(Counter(e.task for e in examples).most_common())
    assert sum(report["by_modality"].values()) == sum(report["by_lang"].values()) == 8
    md = (out / "stats.md").read_text()
    assert "Rejects by reason" in md and "By language" in md and "samples/s" in md

    # Started again: nothing left to do, nothing rewritten.
    mtimes = {p: p.stat().st_mtime_ns for p in shards}
    again = synthesize(tiny_config(out, photo_folder), tiny_backend(tiny_vlm))
    assert again["accepted"] == 8 and {p: p.stat().st_mtime_ns for p in shards} == mtimes

    # A run made for a smaller target, then extended, ends as if run once for the larger one.
    from tests.synth.test_synth_resume import contents

    grown = tmp_path / "grown"
    small = synthesize(tiny_config(grown, photo_folder, num_samples=5), tiny_backend(tiny_vlm))
    assert small["accepted"] == 5
    assert any(json.loads(r.read_text())["truncated"] for r in (grown / "_progress").glob("unit-*.json"))
    synthesize(tiny_config(grown, photo_folder), tiny_backend(tiny_vlm))
    assert contents(grown) == contents(out)

    # A different configuration in the same folder is refused with one clear line.
    with pytest.raises(ValueError, match=r"different configuration \(seed differ"):
        synthesize(tiny_config(out, photo_folder, seed=4), tiny_backend(tiny_vlm))


def test_datamodule_reads_synthesized_shards(tiny_vlm, photo_folder, tmp_path):
    data = pytest.importorskip("mme5.data")
    out = tmp_path / "synth"
    synthesize(tiny_config(out, photo_folder, num_samples=4, indices_per_shard=3), tiny_backend(tiny_vlm))
    dm = data.ShardDataModule(
        train=[data.ShardSet(str(out))],
        batch_size=2,
        num_workers=0,
        shuffle_buffer=1,
        collate_fn=list,
        seed=0,
    )
    dm.setup("fit")
    seen = []
    for batch in dm.train_dataloader():
        seen += batch
    assert sorted(e.id for e in seen) == sorted(
        e.id for p in out.glob("*.tar") for e in map(decode_sample, iter_shard(p))
    )
    assert dm.skip_counts() in ({}, None) or not any(dm.skip_counts().values())


def test_unreachable_server_is_counted_not_lost(photo_folder, tmp_path):
    """Every failed request is a counted ``backend_error``; the run stops at max_attempts and says so."""
    import socket

    from mme5.synth import OpenAIServerBackend

    with socket.socket() as s:  # a port nothing listens on (bound, then closed)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = OpenAIServerBackend(f"http://127.0.0.1:{port}/v1", "m", max_retries=0, timeout_s=5)
    stats = synthesize(tiny_config(tmp_path / "o", photo_folder, num_samples=3, max_attempts=5), backend)
    assert stats["accepted"] == 0 and stats["attempted"] == 5
    assert stats["rejects"] == {"backend_error": 5}
    assert not list((tmp_path / "o").glob("*.tar"))
