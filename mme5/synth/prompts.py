"""One-pass "deep thinking" prompts, one per (task, modality combination).

A prompt shows the generator the images of the sample (query image and/or the retrieved document
images) and asks, in a single generation, for a visual interpretation, a first sample, a scored
self-evaluation, suggested improvements and the revised sample, as JSON (see :mod:`.schema`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

from .languages import language_name
from .plan import SamplePlan
from .schema import split_modality, text_fields

SYSTEM_PROMPT = (
    "You create training data for a multimodal, multilingual embedding model. Each sample pairs a query "
    "with a positive document and a hard negative: a document that looks relevant but is wrong. You look "
    "at the images closely, think before you write, judge your own draft honestly, and answer with one "
    "JSON object only."
)

TASK_GUIDE = {
    "classification": (
        "Task: classification. The query shows something to be categorised; the instruction names the "
        "kind of category (object class, scene, style, emotion, activity, ...). The positive is the "
        "correct category; the hard negative is a wrong category that is easy to confuse with it."
    ),
    "vqa": (
        "Task: visual question answering. The query asks a question that can only be answered by "
        "looking at the query image; the positive is the correct answer; the hard negative is a "
        "plausible but wrong answer to the same question."
    ),
    "retrieval": (
        "Task: retrieval. The query is a search request; the positive is a document that satisfies it; "
        "the hard negative is a document on a closely related topic that does not satisfy it."
    ),
}

QUERY_GUIDE = {
    "I": "The query is the query image alone: write no query text.",
    "T": (
        "The query is a text alone: the searcher has not seen any image, so the query text must carry "
        "everything needed to find the positive."
    ),
    "IT": "The query is the query image together with a query text that refers to it.",
}

DOC_GUIDE = {
    "I": (
        "Documents are images alone: the positive document is the positive image and the hard negative "
        "is the hard-negative image; write no document texts, so the instruction and query must make "
        "the positive image the right answer and the hard-negative image a wrong one."
    ),
    "T": "Documents are texts: write the positive text and the hard-negative text.",
    "IT": (
        "Documents are an image with a text each: the positive is the positive image with the positive "
        "text, the hard negative is the hard-negative image with the hard-negative text."
    ),
}

FIELD_GUIDE = {
    "instruction": "instruction: one English sentence telling the embedding model what to find",
    "query": "query: the query text",
    "positive": "positive: the positive document text",
    "hard_negative": "hard_negative: the hard-negative document text",
}

STYLE_EXAMPLES = (
    '"Represent the given image with the following question:", '
    '"Find me an everyday image that matches the given caption:", '
    '"Identify the scene shown in the image.", "Retrieve a news article that describes the photo."'
)


@dataclass
class PromptConfig:
    """Wording options of the generation prompt."""

    system_prompt: str = SYSTEM_PROMPT
    """The system message."""
    extra_guidance: str | None = None
    """An optional paragraph appended to every prompt (domain hints, tone, ...)."""
    min_score: int = 7
    """The score the prompt asks the revision to reach (keep equal to the quality gate's threshold)."""


@dataclass
class Prompt:
    """A rendered prompt: system text, user text, and the images it refers to, in order."""

    system: str
    text: str
    images: list[Image.Image] = field(default_factory=list)
    image_roles: list[str] = field(default_factory=list)

    def messages(self, image_part: Callable[[Image.Image], dict] | None = None) -> list[dict]:
        """Chat messages in the OpenAI content-parts layout, the images first.

        ``image_part`` turns an image into its content part (default ``{"type": "image"}``, the
        placeholder Hugging Face processors expect, with the images passed beside the text).
        """
        make = image_part or (lambda _img: {"type": "image"})
        parts: list[dict] = [make(img) for img in self.images]
        parts.append({"type": "text", "text": self.text})
        return [{"role": "system", "content": self.system}, {"role": "user", "content": parts}]


def image_roles(modality: str) -> list[str]:
    """Which images the generator sees, in order: ``query``, ``positive``, ``negative``."""
    q, d = split_modality(modality)
    roles = ["query"] if "I" in q else []
    if "I" in d:
        roles += ["positive", "negative"]
    return roles


def build_prompt(
    plan: SamplePlan, images: dict[str, Image.Image], config: PromptConfig | None = None
) -> Prompt:
    """The deep-thinking prompt of one planned sample (``images``: role -> image, see :func:`image_roles`)."""
    config = config or PromptConfig()
    q, d = split_modality(plan.modality)
    roles = image_roles(plan.modality)
    missing = [r for r in roles if r not in images]
    if missing:
        raise ValueError(f"sample {plan.id} ({plan.modality}) needs images for {missing}")
    fields = text_fields(plan.modality)
    lines: list[str] = []
    names = {
        "query": "the query image",
        "positive": "the positive image",
        "negative": "the hard-negative image",
    }
    for i, role in enumerate(roles, 1):
        lines.append(f"Image {i} is {names[role]}.")
    if not roles:
        lines.append("There is no image in this sample.")
    lines += ["", TASK_GUIDE[plan.task], QUERY_GUIDE[q], DOC_GUIDE[d]]
    texts = [f for f in fields if f != "instruction"]
    if texts:
        lang = language_name(plan.lang)
        lines.append(
            f"Write the instruction in English and the {', '.join(texts).replace('_', ' ')} text(s) in "
            f"{lang} (language code '{plan.lang}'), natural as a native speaker writes."
        )
    else:
        lines.append("Only the instruction is text here; write it in English.")
    lines.append(f"Instruction style examples: {STYLE_EXAMPLES}")
    lines += [
        "",
        "Think in one pass and answer with a JSON object with these parts, in this order:",
        (
            "1. visual_interpretation: description (the whole picture), objects (the main objects and their "
            "attributes), context (setting, time, culture, text visible in the image), relation (what links "
            "the image(s) to the sample you will write)."
        ),
        "2. sample: your first draft, with the fields: " + "; ".join(FIELD_GUIDE[f] for f in fields) + ".",
        (
            "3. self_evaluation: integer scores from 1 to 10 for relevance (to the images), "
            "negative_plausibility (the hard negative is close yet clearly wrong), clarity (of the "
            "instruction) and diversity (not a generic or repeated pattern)."
        ),
        "4. improvements: what the draft should change to score higher.",
        (
            f"5. revised_sample: the improved sample, same fields as sample, meant to score at least "
            f"{config.min_score} everywhere. Only the revised sample is kept."
        ),
    ]
    if config.extra_guidance:
        lines += ["", config.extra_guidance]
    return Prompt(config.system_prompt, "\n".join(lines), [images[r] for r in roles], roles)
