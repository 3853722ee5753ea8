"""The demo corpus's tasks: one query with its ranked candidates, for every MMEB meta-task.

A builder draws a scene (or several) and returns a :class:`TaskItem`: the query side, then the
candidates with the truth first, the hard ones next (each one attribute away from the truth: another
colour, shape, size, position, background or count), then easy fillers. Training keeps the truth and
the first few hard candidates as the sample's hard negatives; evaluation keeps the whole list.
Images are :class:`~mme5.demo.scene.Picture` descriptions, rendered only when written.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from mme5.demo.phrases import phrases
from mme5.demo.scene import (
    BACKGROUNDS,
    CELLS,
    COLOURS,
    SHAPES,
    DemoObject,
    Picture,
    Scene,
    distinct_scenes,
    hard_variants,
    random_scene,
)

INSTRUCTIONS: dict[str, str] = {
    "classification": "Represent the given image for classification",
    "vqa": "Represent the given image with the following question:",
    "t2i": "Find an image that matches the given caption:",
    "i2t": "Find a caption that describes the given image.",
    "it2i": "Find an image that matches the given image with the following change:",
    "i2i": "Find an image that shows the same scene as the given image.",
    "grounding": "Select the portion of the image that isolates the object described as:",
}
IMAGE_DOC_INSTRUCTION = "Represent the given image."
CROP_DOC_INSTRUCTION = "Represent the given cropped image of the object."
#: Scenes that are captioned hold at most this many objects (captions stay short enough for tiny models).
CAPTION_MAX_OBJECTS = 3
#: English class labels of the counting classification (other languages use their count words).
COUNT_LABELS_EN = {1: "one shape", 2: "two shapes", 3: "three shapes", 4: "four shapes"}


@dataclass
class Candidate:
    """One candidate side: a text, a picture, or both."""

    text: str | None = None
    picture: Picture | None = None


@dataclass
class TaskItem:
    """A query and its candidates (truth first, then ``num_hard`` hard ones, then fillers)."""

    kind: str
    task: str  # classification | vqa | retrieval | grounding
    modality: str  # query -> candidate, e.g. "IT2I"
    lang: str
    instruction: str
    query_text: str | None
    query_picture: Picture | None
    doc_instruction: str | None
    candidates: list[Candidate] = field(default_factory=list)
    num_hard: int = 0


def _seed(rng: random.Random) -> int:
    return rng.getrandbits(31)


def _ranked(truth: object, same_type: list, rng: random.Random) -> list:
    others = [x for x in same_type if x != truth]
    rng.shuffle(others)
    return [truth, *others]


# ---- classification -------------------------------------------------------------------------------
def _classification(
    kind: str, rng: random.Random, lang: str, labels: dict, truth_key: object, picture: Picture
) -> TaskItem:
    keys = _ranked(truth_key, list(labels), rng)
    return TaskItem(
        kind,
        "classification",
        "I2T",
        lang,
        INSTRUCTIONS["classification"],
        None,
        picture,
        None,
        [Candidate(labels[k]) for k in keys],
        num_hard=len(keys) - 1,
    )


def class_shape(rng: random.Random, lang: str, n: int | None = None) -> TaskItem:
    """Image of one object -> its shape name (the class list: every shape)."""
    scene = random_scene(rng, 1, 1)
    t = phrases(lang)
    return _classification(
        "class_shape",
        rng,
        lang,
        {s: t.shape_name(s) for s in SHAPES},
        scene.objects[0].shape,
        Picture(scene, _seed(rng)),
    )


def class_colour(rng: random.Random, lang: str, n: int | None = None) -> TaskItem:
    """Image of one object -> its colour name (the class list: every colour)."""
    scene = random_scene(rng, 1, 1)
    t = phrases(lang)
    return _classification(
        "class_colour",
        rng,
        lang,
        {c: t.colour_name(c) for c in COLOURS},
        scene.objects[0].colour,
        Picture(scene, _seed(rng)),
    )


def class_count(rng: random.Random, lang: str, n: int | None = None) -> TaskItem:
    """Image of 1-4 objects -> how many there are."""
    scene = random_scene(rng, 1, 4)
    t = phrases(lang)
    labels = COUNT_LABELS_EN if lang == "en" else {k: t.count_answer(k) for k in (1, 2, 3, 4)}
    return _classification("class_count", rng, lang, labels, len(scene.objects), Picture(scene, _seed(rng)))


# ---- VQA ------------------------------------------------------------------------------------------
def _vqa(
    kind: str,
    rng: random.Random,
    lang: str,
    picture: Picture,
    question: str,
    truth: str,
    same_type: list[str],
    n: int | None,
) -> TaskItem:
    """Candidates are answers of the question's own type only, so the answer type gives nothing away."""
    ranked = _ranked(truth, list(dict.fromkeys(same_type)), rng)[: n or None]
    return TaskItem(
        kind,
        "vqa",
        "IT2T",
        lang,
        INSTRUCTIONS["vqa"],
        question,
        picture,
        None,
        [Candidate(x) for x in ranked],
        num_hard=len(ranked) - 1,
    )


def vqa_colour(rng: random.Random, lang: str, n: int | None = None) -> TaskItem:
    """ "What colour is the star?" -> the star's colour (candidates: every colour)."""
    scene = random_scene(rng, 1, 4)
    obj = rng.choice(scene.objects)
    t = phrases(lang)
    return _vqa(
        "vqa_colour",
        rng,
        lang,
        Picture(scene, _seed(rng)),
        t.question_colour(obj),
        t.colour_name(obj.colour, obj.shape),
        [t.colour_name(c, obj.shape) for c in COLOURS],
        n,
    )


def vqa_shape(rng: random.Random, lang: str, n: int | None = None) -> TaskItem:
    """ "What shape is at the top left?" -> the shape in that quadrant (candidates: every shape)."""
    scene = random_scene(rng, 1, 4)
    obj = rng.choice(scene.objects)
    t = phrases(lang)
    return _vqa(
        "vqa_shape",
        rng,
        lang,
        Picture(scene, _seed(rng)),
        t.question_shape(obj.cell),
        t.shape_name(obj.shape),
        [t.shape_name(s) for s in SHAPES],
        n,
    )


def vqa_position(rng: random.Random, lang: str, n: int | None = None) -> TaskItem:
    """ "Where is the red star?" -> its quadrant (candidates: every quadrant)."""
    scene = random_scene(rng, 1, 4)
    obj = rng.choice(scene.objects)
    t = phrases(lang)
    return _vqa(
        "vqa_position",
        rng,
        lang,
        Picture(scene, _seed(rng)),
        t.question_position(obj),
        t.location_answer(obj.cell),
        [t.location_answer(c) for c in CELLS],
        n,
    )


def vqa_count(rng: random.Random, lang: str, n: int | None = None) -> TaskItem:
    """ "How many shapes are in the image?" -> a count word."""
    scene = random_scene(rng, 1, 4)
    t = phrases(lang)
    return _vqa(
        "vqa_count",
        rng,
        lang,
        Picture(scene, _seed(rng)),
        t.question_count(),
        t.count_answer(len(scene.objects)),
        [t.count_answer(k) for k in (1, 2, 3, 4)],
        n,
    )


def vqa_object(rng: random.Random, lang: str, n: int | None = None) -> TaskItem:
    """ "What is at the top left?" -> "a small red star", among objects one attribute away and others."""
    n = n or 10
    scene = random_scene(rng, 1, 4)
    obj = rng.choice(scene.objects)
    t = phrases(lang)
    hard = [
        obj.with_(size="large" if obj.size == "small" else "small"),
        obj.with_(colour=rng.choice([c for c in COLOURS if c != obj.colour])),
        obj.with_(shape=rng.choice([s for s in SHAPES if s != obj.shape])),
    ]
    rng.shuffle(hard)
    others = [
        o
        for o in (DemoObject(s, c, z, obj.cell) for s in SHAPES for c in COLOURS for z in ("small", "large"))
        if o != obj and o not in hard
    ]
    rng.shuffle(others)
    answers = [t.answer_object(o) for o in [obj, *hard, *others][:n]]
    return TaskItem(
        "vqa_object",
        "vqa",
        "IT2T",
        lang,
        INSTRUCTIONS["vqa"],
        t.question_object(obj.cell),
        Picture(scene, _seed(rng)),
        None,
        [Candidate(a) for a in answers],
        num_hard=min(len(hard), len(answers) - 1),
    )


# ---- retrieval ------------------------------------------------------------------------------------
def _scene_candidates(
    scene: Scene, rng: random.Random, n: int, hard: int, exclude: tuple[Scene, ...] = ()
) -> tuple[list[Scene], int]:
    hard_scenes = hard_variants(scene, rng, min(hard, n - 1), exclude=exclude)
    fill = distinct_scenes(rng, n - 1 - len(hard_scenes), exclude={scene, *hard_scenes, *exclude})
    return [scene, *hard_scenes, *fill], len(hard_scenes)


def ret_t2i(rng: random.Random, lang: str, n: int | None = None) -> TaskItem:
    """Caption -> the image it describes, among images one attribute away and random ones."""
    n = n or 10
    scene = random_scene(rng, 1, CAPTION_MAX_OBJECTS)
    scenes, k = _scene_candidates(scene, rng, n, hard=4)
    return TaskItem(
        "ret_t2i",
        "retrieval",
        "T2I",
        lang,
        INSTRUCTIONS["t2i"],
        phrases(lang).caption(scene),
        None,
        IMAGE_DOC_INSTRUCTION,
        [Candidate(None, Picture(s, _seed(rng))) for s in scenes],
        k,
    )


def ret_i2t(rng: random.Random, lang: str, n: int | None = None) -> TaskItem:
    """Image -> its caption, among captions of scenes one attribute away and random ones."""
    n = n or 10
    scene = random_scene(rng, 1, CAPTION_MAX_OBJECTS)
    scenes, k = _scene_candidates(scene, rng, n, hard=4)
    t = phrases(lang)
    return TaskItem(
        "ret_i2t",
        "retrieval",
        "I2T",
        lang,
        INSTRUCTIONS["i2t"],
        None,
        Picture(scene, _seed(rng)),
        None,
        [Candidate(t.caption(s)) for s in scenes],
        k,
    )


def ret_it2i(rng: random.Random, lang: str, n: int | None = None) -> TaskItem:
    """Image + edit request ("the circle is now blue") -> the edited scene (composed retrieval).

    The hardest candidates: the unedited scene, the same object in a third colour, and the edit
    applied to another object.
    """
    n = n or 10
    t = phrases(lang)
    scene = random_scene(rng)
    hard: list[Scene] = [scene]
    if rng.random() < 0.7:
        obj = rng.choice(scene.objects)
        new_colour = rng.choice([c for c in COLOURS if c != obj.colour])
        target = scene.replace_object(obj, obj.with_(colour=new_colour))
        edit = t.edit_colour(obj, new_colour)
        third = rng.choice([c for c in COLOURS if c not in (obj.colour, new_colour)])
        hard.append(scene.replace_object(obj, obj.with_(colour=third)))
        others = [o for o in scene.objects if o != obj and o.colour != new_colour]
        if others:
            other = rng.choice(others)
            hard.append(scene.replace_object(other, other.with_(colour=new_colour)))
    else:
        new_bg = rng.choice([b for b in BACKGROUNDS if b != scene.background])
        target = Scene(scene.objects, new_bg)
        edit = t.edit_background(new_bg)
        hard.append(Scene(scene.objects, next(b for b in BACKGROUNDS if b not in (scene.background, new_bg))))
    hard = hard[: n - 1]
    scenes, k = _scene_candidates(target, rng, n - len(hard), hard=2, exclude=tuple(hard))
    ordered = [scenes[0], *hard, *scenes[1:]]
    return TaskItem(
        "ret_it2i",
        "retrieval",
        "IT2I",
        lang,
        INSTRUCTIONS["it2i"],
        edit,
        Picture(scene, _seed(rng)),
        IMAGE_DOC_INSTRUCTION,
        [Candidate(None, Picture(s, _seed(rng))) for s in ordered],
        len(hard) + k,
    )


def ret_i2i(rng: random.Random, lang: str, n: int | None = None) -> TaskItem:
    """Image -> the same scene re-rendered (other jitter), among scenes one attribute away."""
    n = n or 10
    scene = random_scene(rng)
    scenes, k = _scene_candidates(scene, rng, n, hard=5)
    return TaskItem(
        "ret_i2i",
        "retrieval",
        "I2I",
        lang,
        INSTRUCTIONS["i2i"],
        None,
        Picture(scene, _seed(rng)),
        IMAGE_DOC_INSTRUCTION,
        [Candidate(None, Picture(s, _seed(rng))) for s in scenes],
        k,
    )


# ---- grounding ------------------------------------------------------------------------------------
def _grounding(kind: str, rng: random.Random, lang: str, n: int | None, by_position: bool) -> TaskItem:
    n = n or 10
    t = phrases(lang)
    scene = random_scene(rng, 2, 4)
    target = rng.choice(scene.objects)
    picture = Picture(scene, _seed(rng))
    crops = [picture.cropped(target.cell)]
    crops += [picture.cropped(o.cell) for o in scene.objects if o != target]
    recoloured = scene.replace_object(
        target, target.with_(colour=rng.choice([c for c in COLOURS if c != target.colour]))
    )
    crops.append(Picture(recoloured, _seed(rng), target.cell))
    unused = [s for s in SHAPES if s not in {o.shape for o in scene.objects}]
    if unused:
        reshaped = scene.replace_object(target, target.with_(shape=rng.choice(unused)))
        crops.append(Picture(reshaped, _seed(rng), target.cell))
    num_hard = min(len(crops), n) - 1
    while len(crops) < n:
        other = random_scene(rng, 1, 4)
        obj = rng.choice(other.objects)
        if (obj.shape, obj.colour) != (target.shape, target.colour):
            crops.append(Picture(other, _seed(rng), obj.cell))
    phrase = t.refer_position(target.cell) if by_position else t.refer_object(target)
    return TaskItem(
        kind,
        "grounding",
        "IT2I",
        lang,
        INSTRUCTIONS["grounding"],
        phrase,
        picture,
        CROP_DOC_INSTRUCTION,
        [Candidate(None, c) for c in crops[:n]],
        num_hard,
    )


def ground_object(rng: random.Random, lang: str, n: int | None = None) -> TaskItem:
    """Image + "the red star" -> the crop holding that object."""
    return _grounding("ground_object", rng, lang, n, by_position=False)


def ground_position(rng: random.Random, lang: str, n: int | None = None) -> TaskItem:
    """Image + "the shape at the top left" -> the crop of that quadrant's object."""
    return _grounding("ground_position", rng, lang, n, by_position=True)


Builder = Callable[[random.Random, str, "int | None"], TaskItem]
BUILDERS: dict[str, Builder] = {
    "class_shape": class_shape,
    "class_colour": class_colour,
    "class_count": class_count,
    "vqa_colour": vqa_colour,
    "vqa_shape": vqa_shape,
    "vqa_position": vqa_position,
    "vqa_count": vqa_count,
    "vqa_object": vqa_object,
    "ret_t2i": ret_t2i,
    "ret_i2t": ret_i2t,
    "ret_it2i": ret_it2i,
    "ret_i2i": ret_i2i,
    "ground_object": ground_object,
    "ground_position": ground_position,
}

#: MMEB-style evaluation datasets: name -> (builder kind, meta-task as the evaluation reader spells it).
EVAL_DATASETS: dict[str, tuple[str, str]] = {
    "Demo-Class-Shape": ("class_shape", "Classification"),
    "Demo-Class-Colour": ("class_colour", "Classification"),
    "Demo-Class-Count": ("class_count", "Classification"),
    "Demo-VQA-Colour": ("vqa_colour", "VQA"),
    "Demo-VQA-Shape": ("vqa_shape", "VQA"),
    "Demo-VQA-Position": ("vqa_position", "VQA"),
    "Demo-VQA-Object": ("vqa_object", "VQA"),
    "Demo-Ret-T2I": ("ret_t2i", "Retrieval"),
    "Demo-Ret-I2T": ("ret_i2t", "Retrieval"),
    "Demo-Ret-IT2I": ("ret_it2i", "Retrieval"),
    "Demo-Ret-I2I": ("ret_i2i", "Retrieval"),
    "Demo-Ground-Object": ("ground_object", "Grounding"),
    "Demo-Ground-Position": ("ground_position", "Grounding"),
}

#: Training mixture: kind -> share of samples (sums to 1).
TRAIN_MIX: dict[str, float] = {
    "class_shape": 0.06,
    "class_colour": 0.06,
    "class_count": 0.05,
    "vqa_colour": 0.05,
    "vqa_shape": 0.05,
    "vqa_position": 0.05,
    "vqa_count": 0.03,
    "vqa_object": 0.05,
    "ret_t2i": 0.20,
    "ret_i2t": 0.10,
    "ret_it2i": 0.08,
    "ret_i2i": 0.06,
    "ground_object": 0.08,
    "ground_position": 0.08,
}
#: Kinds whose texts are multilingual in training get this language mix (XTD needs captions in all).
CAPTION_LANG_MIX: dict[str, float] = {
    "en": 0.30,
    "it": 0.10,
    "es": 0.10,
    "ru": 0.10,
    "zh": 0.10,
    "pl": 0.10,
    "tr": 0.10,
    "ko": 0.10,
}
OTHER_LANG_MIX: dict[str, float] = {
    "en": 0.65,
    "it": 0.05,
    "es": 0.05,
    "ru": 0.05,
    "zh": 0.05,
    "pl": 0.05,
    "tr": 0.05,
    "ko": 0.05,
}
TEXT_FREE_KINDS = frozenset({"ret_i2i"})


def train_language(kind: str, rng: random.Random) -> str:
    """The language of one training sample of ``kind``."""
    if kind in TEXT_FREE_KINDS:
        return "en"
    mix = CAPTION_LANG_MIX if kind in ("ret_t2i", "ret_i2t") else OTHER_LANG_MIX
    return rng.choices(list(mix), weights=list(mix.values()))[0]


#: Kinds trained on but not evaluated on their own (their samples still name a demo source).
EXTRA_SOURCES: dict[str, str] = {"vqa_count": "Demo-VQA-Count"}


def source_name(kind: str) -> str:
    """The dataset name a kind's training samples carry in ``source``."""
    for name, (k, _) in EVAL_DATASETS.items():
        if k == kind:
            return name
    return EXTRA_SOURCES[kind]


def vocabulary_texts() -> list[str]:
    """Every instruction, label and phrase the corpus can produce (e.g. to train a tiny tokenizer)."""
    from mme5.demo.phrases import all_phrases

    return [
        *INSTRUCTIONS.values(),
        IMAGE_DOC_INSTRUCTION,
        CROP_DOC_INSTRUCTION,
        *COUNT_LABELS_EN.values(),
        *all_phrases(),
    ]
