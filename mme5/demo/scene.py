"""Scenes of the demo corpus: a few flat shapes on a plain background, drawn with PIL.

A :class:`Scene` is the exact content a caption describes (per object: shape, colour, size and the
quadrant it sits in; plus the background colour). A :class:`Picture` is one rendering of a scene: its
seed fixes the jitter (position inside the quadrant, scale, rotation, tint) that captions do not
mention, so two pictures of one scene are "the same scene re-rendered". Scenes hold distinct shapes,
so "the star" always names one object.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass, replace
from functools import cache

from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
SIZES: tuple[str, ...] = ("small", "large")
CELLS: tuple[str, ...] = ("top_left", "top_right", "bottom_left", "bottom_right")
BACKGROUNDS: tuple[str, ...] = ("black", "white", "gray")
MAX_OBJECTS = len(CELLS)

RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 165, 60),
    "blue": (40, 85, 225),
    "yellow": (240, 215, 30),
    "purple": (140, 55, 195),
    "orange": (250, 135, 20),
    "black": (18, 18, 18),
    "white": (238, 238, 238),
    "gray": (125, 125, 125),
}
#: Object radius as a fraction of the quadrant's side.
RADIUS = {"small": 0.25, "large": 0.42}
SUPERSAMPLE = 2
JPEG_QUALITY = 90


@dataclass(frozen=True, order=True)
class DemoObject:
    """One shape: what a caption says about it."""

    shape: str
    colour: str
    size: str
    cell: str

    def with_(self, **changes: str) -> DemoObject:
        return replace(self, **changes)


@dataclass(frozen=True)
class Scene:
    """Objects in distinct quadrants with distinct shapes, on a background; equal scenes read the same."""

    objects: tuple[DemoObject, ...]
    background: str

    def __post_init__(self) -> None:
        cells = [o.cell for o in self.objects]
        shapes = [o.shape for o in self.objects]
        if (
            not 1 <= len(self.objects) <= MAX_OBJECTS
            or len(set(cells)) != len(cells)
            or len(set(shapes)) != len(shapes)
        ):
            raise ValueError(f"invalid demo scene: {self}")
        object.__setattr__(self, "objects", tuple(sorted(self.objects, key=lambda o: CELLS.index(o.cell))))

    def ordered(self) -> tuple[DemoObject, ...]:
        """Objects in reading order (top left, top right, bottom left, bottom right)."""
        return self.objects

    def find(self, shape: str) -> DemoObject:
        return next(o for o in self.objects if o.shape == shape)

    def at(self, cell: str) -> DemoObject | None:
        return next((o for o in self.objects if o.cell == cell), None)

    def free_cells(self) -> list[str]:
        used = {o.cell for o in self.objects}
        return [c for c in CELLS if c not in used]

    def replace_object(self, old: DemoObject, new: DemoObject) -> Scene:
        return Scene(tuple(new if o == old else o for o in self.objects), self.background)


@dataclass(frozen=True)
class Picture:
    """One rendering of a scene; ``crop`` names a quadrant to cut out (a grounding candidate)."""

    scene: Scene
    seed: int
    crop: str | None = None

    def cropped(self, cell: str) -> Picture:
        return replace(self, crop=cell)


def random_scene(rng: random.Random, min_objects: int = 1, max_objects: int = MAX_OBJECTS) -> Scene:
    """A uniformly drawn scene with ``min_objects..max_objects`` objects."""
    n = rng.randint(min_objects, max_objects)
    shapes = rng.sample(SHAPES, n)
    cells = rng.sample(CELLS, n)
    objects = tuple(
        DemoObject(s, rng.choice(COLOURS), rng.choice(SIZES), c) for s, c in zip(shapes, cells, strict=False)
    )
    return Scene(objects, rng.choice(BACKGROUNDS))


PERTURBATIONS: tuple[str, ...] = ("colour", "shape", "size", "position", "background", "count")


def perturb(scene: Scene, rng: random.Random, kind: str) -> Scene:
    """A scene that differs from ``scene`` in exactly one described attribute (a hard negative)."""
    obj = rng.choice(scene.objects)
    if kind == "colour":
        return scene.replace_object(
            obj, obj.with_(colour=rng.choice([c for c in COLOURS if c != obj.colour]))
        )
    if kind == "shape":
        unused = [s for s in SHAPES if s not in {o.shape for o in scene.objects}]
        return scene.replace_object(obj, obj.with_(shape=rng.choice(unused)))
    if kind == "size":
        return scene.replace_object(obj, obj.with_(size="large" if obj.size == "small" else "small"))
    if kind == "position":
        free = scene.free_cells()
        if free:
            return scene.replace_object(obj, obj.with_(cell=rng.choice(free)))
        other = rng.choice([o for o in scene.objects if o != obj])
        swapped = tuple(
            o.with_(cell=other.cell) if o == obj else o.with_(cell=obj.cell) if o == other else o
            for o in scene.objects
        )
        return Scene(swapped, scene.background)
    if kind == "background":
        return Scene(scene.objects, rng.choice([b for b in BACKGROUNDS if b != scene.background]))
    if kind == "count":
        free = scene.free_cells()
        if len(scene.objects) == 1 or (free and rng.random() < 0.5):
            unused = [s for s in SHAPES if s not in {o.shape for o in scene.objects}]
            new = DemoObject(rng.choice(unused), rng.choice(COLOURS), rng.choice(SIZES), rng.choice(free))
            return Scene((*scene.objects, new), scene.background)
        return Scene(tuple(o for o in scene.objects if o != obj), scene.background)
    raise ValueError(f"unknown perturbation '{kind}'; expected one of {', '.join(PERTURBATIONS)}")


def hard_variants(
    scene: Scene,
    rng: random.Random,
    k: int,
    kinds: tuple[str, ...] = PERTURBATIONS,
    exclude: tuple[Scene, ...] = (),
) -> list[Scene]:
    """``k`` distinct scenes, each one attribute away from ``scene`` (kinds cycle, drawn without repeats)."""
    out: list[Scene] = []
    seen = {scene, *exclude}
    order = list(kinds)
    rng.shuffle(order)
    attempts = 0
    while len(out) < k:
        if attempts > 50 * (k + 1):
            raise RuntimeError(f"cannot find {k} hard variants of {scene}")
        variant = perturb(scene, rng, order[attempts % len(order)])
        attempts += 1
        if variant not in seen:
            seen.add(variant)
            out.append(variant)
    return out


def distinct_scenes(
    rng: random.Random,
    k: int,
    exclude: set[Scene] | tuple[Scene, ...] = (),
    min_objects: int = 1,
    max_objects: int = MAX_OBJECTS,
) -> list[Scene]:
    """``k`` random scenes, all different from each other and from ``exclude``."""
    seen = set(exclude)
    out: list[Scene] = []
    while len(out) < k:
        s = random_scene(rng, min_objects, max_objects)
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


# ---- drawing --------------------------------------------------------------------------------------
@cache
def _unit_outline(shape: str) -> tuple[tuple[float, float], ...]:
    """The shape's outline in a unit circle (y down), for polygon shapes."""
    if shape == "square":
        r = 1 / math.sqrt(2) * 1.05
        return ((-r, -r), (r, -r), (r, r), (-r, r))
    if shape == "triangle":
        return tuple((math.cos(a), math.sin(a) + 0.15) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6))
    if shape == "star":
        pts = []
        for i in range(10):
            a = -math.pi / 2 + i * math.pi / 5
            rad = 1.0 if i % 2 == 0 else 0.45
            pts.append((rad * math.cos(a), rad * math.sin(a)))
        return tuple(pts)
    if shape == "heart":
        pts = []
        for i in range(40):
            t = 2 * math.pi * i / 40
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((x / 17.0, -y / 17.0 + 0.1))
        return tuple(pts)
    raise ValueError(f"no outline for shape '{shape}'")


def _jitter_rgb(rgb: tuple[int, int, int], rng: random.Random, amount: int) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)  # type: ignore[return-value]


def cell_box(cell: str, size: int) -> tuple[int, int, int, int]:
    """The quadrant's pixel box (left, top, right, bottom) in a ``size`` x ``size`` image."""
    half = size // 2
    col, row = CELLS.index(cell) % 2, CELLS.index(cell) // 2
    return col * half, row * half, col * half + half, row * half + half


def render_scene(scene: Scene, seed: int, size: int) -> Image.Image:
    """Draw a scene (jitter from ``seed``) as a ``size`` x ``size`` RGB image."""
    rng = random.Random(seed)
    big = size * SUPERSAMPLE
    img = Image.new("RGB", (big, big), _jitter_rgb(RGB[scene.background], rng, 8))
    draw = ImageDraw.Draw(img)
    half = big / 2
    for obj in scene.objects:
        col, row = CELLS.index(obj.cell) % 2, CELLS.index(obj.cell) // 2
        r = RADIUS[obj.size] * half * rng.uniform(0.9, 1.1)
        slack = max(0.0, half / 2 - r * 1.08)
        cx = col * half + half / 2 + rng.uniform(-slack, slack)
        cy = row * half + half / 2 + rng.uniform(-slack, slack)
        fill = _jitter_rgb(RGB[obj.colour], rng, 14)
        if obj.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
            continue
        angle = math.radians(rng.uniform(-8, 8))
        ca, sa = math.cos(angle), math.sin(angle)
        pts = [(cx + r * (x * ca - y * sa), cy + r * (x * sa + y * ca)) for x, y in _unit_outline(obj.shape)]
        draw.polygon(pts, fill=fill)
    return img.reduce(SUPERSAMPLE)


def render(picture: Picture, size: int) -> Image.Image:
    """The picture as an image; a cropped picture is its quadrant scaled back to ``size``."""
    img = render_scene(picture.scene, picture.seed, size)
    if picture.crop is None:
        return img
    return img.crop(cell_box(picture.crop, size)).resize((size, size), Image.Resampling.BILINEAR)


def jpeg_bytes(img: Image.Image) -> bytes:
    """Deterministic JPEG encoding (fixed quality, no metadata)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()
