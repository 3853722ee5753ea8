"""The JSON schema of one deep-thinking generation, and its validation.

One generation holds, in this order (the order the model writes them in):

1. ``visual_interpretation``: description, objects, context, and how the image(s) relate to the sample;
2. ``sample``: the first draft (instruction in English; query / positive / hard negative texts in the
   drawn language, only for the sides that carry text in the modality combination);
3. ``self_evaluation``: integer scores 1-10 for relevance, hard-negative plausibility, clarity, diversity;
4. ``improvements``: what to change;
5. ``revised_sample``: the final sample, the one that is kept.

The same schema drives structured decoding (vLLM, xgrammar) and :func:`validate`, which checks the
subset of JSON Schema used here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from mme5.errors import ConfigError

SYNTH_MODALITIES = ("IT2I", "T2IT", "IT2IT", "I2I", "I2T", "IT2T", "T2I")
SCORE_KEYS = ("relevance", "negative_plausibility", "clarity", "diversity")
INTERPRETATION_KEYS = ("description", "objects", "context", "relation")


def split_modality(modality: str) -> tuple[str, str]:
    """``"IT2I"`` -> (``"IT"``, ``"I"``): what the query side and the document sides carry."""
    if modality not in SYNTH_MODALITIES:
        raise ConfigError(
            f"unknown modality combination '{modality}'; expected one of {', '.join(SYNTH_MODALITIES)}"
        )
    q, d = modality.split("2")
    return q, d


def text_fields(modality: str) -> tuple[str, ...]:
    """The sample fields the generator writes for a modality: always the instruction, plus the texts."""
    q, d = split_modality(modality)
    fields = ["instruction"]
    if "T" in q:
        fields.append("query")
    if "T" in d:
        fields += ["positive", "hard_negative"]
    return tuple(fields)


@dataclass(frozen=True)
class StringLimits:
    """Bounds put on every generated string, in the schema itself (so decoding respects them)."""

    max_chars: int = 400
    """Longest string the decoder may write (``maxLength``)."""
    min_chars: int = 1
    """Shortest string (``minLength``)."""
    charset: str | None = None
    """Optional set of allowed characters, written as the inside of a regex class (e.g. ``a-z ,.``).

    A tiny random model needs it; real models do not. With a charset the length bounds go into the
    pattern (``^[charset]{min,max}$``), because grammar compilers ignore maxLength beside a pattern."""

    def schema(self) -> dict[str, Any]:
        if self.charset:
            return {"type": "string", "pattern": f"^[{self.charset}]{{{self.min_chars},{self.max_chars}}}$"}
        return {"type": "string", "minLength": self.min_chars, "maxLength": self.max_chars}


def _object(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def generation_schema(modality: str, limits: StringLimits | None = None) -> dict[str, Any]:
    """The JSON schema a generation must follow for one modality combination."""
    text = (limits or StringLimits()).schema()
    sample = _object({name: dict(text) for name in text_fields(modality)})
    score = {"type": "integer", "minimum": 1, "maximum": 10}
    return _object(
        {
            "visual_interpretation": _object({k: dict(text) for k in INTERPRETATION_KEYS}),
            "sample": sample,
            "self_evaluation": _object({k: dict(score) for k in SCORE_KEYS}),
            "improvements": dict(text),
            "revised_sample": json.loads(json.dumps(sample)),
        }
    )


class SchemaError(ValueError):
    """A generation that does not follow its schema; ``errors`` lists every violation found."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


def validate(obj: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """Every violation of ``schema`` by ``obj`` (empty when valid).

    Supports the keywords :func:`generation_schema` uses: type (object, string, integer, number,
    array, boolean), properties, required, additionalProperties, minLength, maxLength, pattern,
    minimum, maximum, enum, items.
    """
    errors: list[str] = []
    kind = schema.get("type")
    if "enum" in schema and obj not in schema["enum"]:
        errors.append(f"{where}: {obj!r} is not one of {schema['enum']}")
    if kind == "object":
        if not isinstance(obj, dict):
            return [f"{where}: expected an object, got {type(obj).__name__}"]
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in obj:
                errors.append(f"{where}: missing field '{name}'")
        for name, value in obj.items():
            if name in props:
                errors += validate(value, props[name], f"{where}.{name}")
            elif schema.get("additionalProperties", True) is False:
                errors.append(f"{where}: unexpected field '{name}'")
    elif kind == "string":
        if not isinstance(obj, str):
            return [f"{where}: expected a string, got {type(obj).__name__}"]
        if len(obj) < schema.get("minLength", 0):
            errors.append(f"{where}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(obj) > schema["maxLength"]:
            errors.append(f"{where}: longer than {schema['maxLength']} characters")
        if "pattern" in schema and re.search(schema["pattern"], obj) is None:
            errors.append(f"{where}: does not match pattern {schema['pattern']!r}")
    elif kind in ("integer", "number"):
        ok = isinstance(obj, int) if kind == "integer" else isinstance(obj, (int, float))
        if not ok or isinstance(obj, bool):
            return [f"{where}: expected {kind}, got {type(obj).__name__}"]
        if "minimum" in schema and obj < schema["minimum"]:
            errors.append(f"{where}: {obj} < minimum {schema['minimum']}")
        if "maximum" in schema and obj > schema["maximum"]:
            errors.append(f"{where}: {obj} > maximum {schema['maximum']}")
    elif kind == "array":
        if not isinstance(obj, list):
            return [f"{where}: expected an array, got {type(obj).__name__}"]
        for i, item in enumerate(obj):
            errors += validate(item, schema.get("items", {}), f"{where}[{i}]")
    elif kind == "boolean" and not isinstance(obj, bool):
        errors.append(f"{where}: expected true/false, got {type(obj).__name__}")
    return errors


def parse_generation(text: str, modality: str, limits: StringLimits | None = None) -> dict[str, Any]:
    """Parse and validate a generation; raises :class:`SchemaError` (``errors[0]`` starts with the reason)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaError([f"invalid_json: {exc.msg} at character {exc.pos}"]) from None
    errors = validate(obj, generation_schema(modality, limits))
    if errors:
        raise SchemaError(errors)
    return obj
