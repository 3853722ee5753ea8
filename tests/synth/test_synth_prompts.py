"""Prompts per (task, modality) and the generation schema."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from mme5.synth.plan import SYNTH_TASKS, SamplePlan
from mme5.synth.prompts import DOC_GUIDE, QUERY_GUIDE, TASK_GUIDE, build_prompt, image_roles
from mme5.synth.schema import (
    SYNTH_MODALITIES,
    SchemaError,
    StringLimits,
    generation_schema,
    parse_generation,
    text_fields,
    validate,
)

EXPECTED_TEXTS = {  # modality -> text fields of the sample besides the instruction
    "IT2I": ["query"],
    "T2IT": ["query", "positive", "hard_negative"],
    "IT2IT": ["query", "positive", "hard_negative"],
    "I2I": [],
    "I2T": ["positive", "hard_negative"],
    "IT2T": ["query", "positive", "hard_negative"],
    "T2I": ["query"],
}
EXPECTED_IMAGES = {
    "IT2I": ["query", "positive", "negative"],
    "T2IT": ["positive", "negative"],
    "IT2IT": ["query", "positive", "negative"],
    "I2I": ["query", "positive", "negative"],
    "I2T": ["query"],
    "IT2T": ["query"],
    "T2I": ["positive", "negative"],
}


def _images(roles):
    colours = {"query": (200, 30, 30), "positive": (30, 200, 30), "negative": (30, 30, 200)}
    return {r: Image.new("RGB", (16, 16), colours[r]) for r in roles}


@pytest.mark.parametrize("task", SYNTH_TASKS)
@pytest.mark.parametrize("modality", SYNTH_MODALITIES)
def test_prompt_per_task_and_modality(task, modality):
    plan = SamplePlan(0, "id0", task, modality, "ja", 0, 1)
    roles = image_roles(modality)
    assert roles == EXPECTED_IMAGES[modality]
    prompt = build_prompt(plan, _images(roles))
    assert prompt.image_roles == roles and len(prompt.images) == len(roles)
    assert [img.getpixel((0, 0)) for img in prompt.images] == [
        _images(roles)[r].getpixel((0, 0)) for r in roles
    ]
    q, d = modality.split("2")
    assert TASK_GUIDE[task] in prompt.text
    assert QUERY_GUIDE[q] in prompt.text and DOC_GUIDE[d] in prompt.text
    for other in set(SYNTH_TASKS) - {task}:
        assert TASK_GUIDE[other] not in prompt.text
    for i, role in enumerate(roles, 1):
        assert f"Image {i} is the {'hard-negative' if role == 'negative' else role} image." in prompt.text
    if EXPECTED_TEXTS[modality]:
        assert "in Japanese (language code 'ja')" in prompt.text
        assert "instruction in English" in prompt.text
    else:
        assert "Japanese" not in prompt.text and "Only the instruction is text" in prompt.text
    for step in ("visual_interpretation", "sample", "self_evaluation", "improvements", "revised_sample"):
        assert step in prompt.text
    assert (
        prompt.text.index("visual_interpretation")
        < prompt.text.index("self_evaluation")
        < prompt.text.index("revised_sample")
    )
    msgs = prompt.messages()
    assert msgs[0]["role"] == "system" and msgs[1]["content"][-1] == {"type": "text", "text": prompt.text}
    assert [p["type"] for p in msgs[1]["content"][:-1]] == ["image"] * len(roles)


def test_prompt_needs_its_images():
    plan = SamplePlan(0, "id0", "vqa", "IT2I", "en", 0, 1)
    with pytest.raises(ValueError, match=r"needs images for \['negative'\]"):
        build_prompt(plan, _images(["query", "positive"]))


@pytest.mark.parametrize("modality", SYNTH_MODALITIES)
def test_schema_fields_per_modality(modality):
    schema = generation_schema(modality)
    sample = schema["properties"]["revised_sample"]
    assert sample["required"] == ["instruction", *EXPECTED_TEXTS[modality]]
    assert list(text_fields(modality)) == sample["required"]
    assert schema["required"] == [
        "visual_interpretation",
        "sample",
        "self_evaluation",
        "improvements",
        "revised_sample",
    ]
    assert sample == schema["properties"]["sample"]


def _valid(modality: str) -> dict:
    fields = {f: f"{f} text" for f in text_fields(modality)}
    return {
        "visual_interpretation": {"description": "d", "objects": "o", "context": "c", "relation": "r"},
        "sample": dict(fields),
        "self_evaluation": {"relevance": 8, "negative_plausibility": 7, "clarity": 9, "diversity": 6},
        "improvements": "none",
        "revised_sample": dict(fields),
    }


def test_validation_accepts_valid_and_lists_violations():
    obj = _valid("IT2IT")
    assert validate(obj, generation_schema("IT2IT")) == []
    assert parse_generation(json.dumps(obj), "IT2IT") == obj
    bad = _valid("IT2IT")
    bad["self_evaluation"]["clarity"] = 11
    del bad["revised_sample"]["positive"]
    bad["revised_sample"]["extra"] = "x"
    bad["improvements"] = 3
    errors = validate(bad, generation_schema("IT2IT"))
    assert any("clarity: 11 > maximum 10" in e for e in errors)
    assert any("missing field 'positive'" in e for e in errors)
    assert any("unexpected field 'extra'" in e for e in errors)
    assert any("improvements: expected a string" in e for e in errors)
    with pytest.raises(SchemaError, match="invalid_json"):
        parse_generation('{"visual_interpretation": ', "IT2IT")


def test_charset_limits_go_into_the_pattern():
    limits = StringLimits(max_chars=5, min_chars=2, charset="a-z ")
    s = limits.schema()
    assert s == {"type": "string", "pattern": "^[a-z ]{2,5}$"}
    obj = _valid("I2I")
    obj["revised_sample"]["instruction"] = "abc"
    obj["sample"]["instruction"] = "abc"
    for k in obj["visual_interpretation"]:
        obj["visual_interpretation"][k] = "ab"
    obj["improvements"] = "ab"
    assert validate(obj, generation_schema("I2I", limits)) == []
    obj["improvements"] = "abcdef"
    assert validate(obj, generation_schema("I2I", limits))
