"""Synthetic shape scenes with exact captions and VQA answers, deterministic from a seed.

A scene holds 1-3 shapes on a plain light background. The image is a 3x3 grid; each shape sits, with a little
seeded jitter, in its own cell among the five named positions (top, left, center, right, bottom), so shapes never
overlap and every position word is exact. Shapes are drawn at 4x resolution and box-filtered down, so they are
anti-aliased at any `image_size`.

One shape per scene is the *focus*: its colour and its shape are unique in the scene, so "What color is the
<shape>?", "What shape is the <color> object?" and "Where is the <color> <shape>?" are never ambiguous. Every
image gets exactly one question of each type, so the question types are balanced by construction; pass
`question_types` to train on a subset (a curriculum) and the counts stay equal. Yes/no answers alternate with the
image index, so they are balanced 50/50.

`HELDOUT_COMBINATIONS` (5 of the 24 colour-shape pairs) never appear in the images, captions or questions of the
train, validation and test splits. Every `test_heldout` scene has a held-out pair as its focus, and its questions
target it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
from PIL import Image, ImageDraw

from .schema import (
    CAPTION_PROMPT,
    TASKS,
    caption_example,
    examples_to_dataset,
    exact_answer_references,
    png_image_value,
    vqa_example,
)

COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 85, 225),
    "yellow": (240, 205, 30),
    "purple": (140, 60, 190),
    "orange": (245, 135, 25),
}
COLORS: tuple[str, ...] = tuple(COLOR_RGB)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("top", "left", "center", "right", "bottom")
"""Position words in reading order; captions list shapes in this order."""
QUESTION_TYPES: tuple[str, ...] = ("color", "shape", "count", "yes_no", "position")
SPLITS: tuple[str, ...] = ("train", "validation", "test", "test_heldout")
HELDOUT_SPLIT = "test_heldout"

HELDOUT_COMBINATIONS: tuple[tuple[str, str], ...] = (
    ("red", "star"),
    ("green", "triangle"),
    ("blue", "circle"),
    ("yellow", "square"),
    ("purple", "triangle"),
)
"""Colour-shape pairs seen only in `test_heldout`: about 20% of the pairs, every colour but orange once, so each
colour and each shape is still seen in training with other partners."""
ALL_COMBINATIONS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLORS for s in SHAPES)
SEEN_COMBINATIONS: tuple[tuple[str, str], ...] = tuple(
    pair for pair in ALL_COMBINATIONS if pair not in HELDOUT_COMBINATIONS
)

_POSITION_CELLS = {"top": (1, 0), "left": (0, 1), "center": (1, 1), "right": (2, 1), "bottom": (1, 2)}
_POSITION_PHRASES = {
    "top": "at the top",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom": "at the bottom",
}
_NUMBER_WORDS = ("zero", "one", "two", "three")
_SIZE_RADIUS = {"small": 0.06, "large": 0.095}
"""Base radius of each size, as a fraction of the image side."""
_SHAPE_EXTENT = {"circle": 1.0, "square": 1.2, "triangle": 1.4, "star": 1.45}
"""Circumradius of each shape relative to the base radius, so the shapes look about equally big."""
_STAR_INNER_RATIO = 0.45
_CELL_HALF = 1 / 6
_CELL_MARGIN = 0.025
"""Least gap between a shape and its cell's edge, so neighbouring shapes stay 5% of the side apart."""
_MAX_ROTATION = 15.0
_COLOR_JITTER = 10
_SUPERSAMPLE = 4
_MIN_IMAGE_SIZE = 16


@dataclass(frozen=True)
class SceneObject:
    """One shape of a scene. Geometry is in fractions of the image side, so a scene renders at any size."""

    color: str
    shape: str
    size: str
    position: str
    center: tuple[float, float]
    radius: float
    rotation: float
    rgb: tuple[int, int, int]

    @property
    def phrase(self) -> str:
        """The shape as a caption describes it, e.g. "a large red circle on the left"."""
        return f"a {self.size} {self.color} {self.shape} {_POSITION_PHRASES[self.position]}"


@dataclass(frozen=True)
class Scene:
    """The shapes of one image (in reading order), the focus shape's index, and the background colour."""

    objects: tuple[SceneObject, ...]
    focus: int
    background: tuple[int, int, int]

    @property
    def focus_object(self) -> SceneObject:
        """The shape whose colour and shape are unique in the scene; single-shape questions target it."""
        return self.objects[self.focus]

    @property
    def combinations(self) -> set[tuple[str, str]]:
        """The (colour, shape) pairs in the scene."""
        return {(obj.color, obj.shape) for obj in self.objects}


def scene_rng(split: str, index: int, seed: int) -> random.Random:
    """The random stream of one image: independent of the other images, so datasets of any length agree."""
    return random.Random(f"hf_vadapter.synthetic/{seed}/{split}/{index}")


def sample_scene(rng: random.Random, heldout: bool = False) -> Scene:
    """Draw a scene: a focus pair (held-out when `heldout`, else seen) plus up to two other shapes.

    The other shapes differ from the focus in colour and in shape. Outside the held-out split they use seen pairs
    only.
    """
    focus_pair = rng.choice(HELDOUT_COMBINATIONS if heldout else SEEN_COMBINATIONS)
    pool = [
        pair
        for pair in (ALL_COMBINATIONS if heldout else SEEN_COMBINATIONS)
        if pair[0] != focus_pair[0] and pair[1] != focus_pair[1]
    ]
    pairs = [focus_pair] + rng.sample(pool, rng.randint(0, 2))
    positions = rng.sample(POSITIONS, len(pairs))
    objects = [_place_object(rng, color, shape, position) for (color, shape), position in zip(pairs, positions)]
    order = sorted(range(len(objects)), key=lambda i: POSITIONS.index(objects[i].position))
    background = tuple(rng.randint(232, 250) for _ in range(3))
    return Scene(objects=tuple(objects[i] for i in order), focus=order.index(0), background=background)


def _place_object(rng: random.Random, color: str, shape: str, position: str) -> SceneObject:
    """Give a shape its size, jittered centre inside its grid cell, rotation and slightly varied colour."""
    size = rng.choice(SIZES)
    radius = _SIZE_RADIUS[size]
    jitter = max(0.0, _CELL_HALF - radius * _SHAPE_EXTENT[shape] - _CELL_MARGIN)
    col, row = _POSITION_CELLS[position]
    center = tuple((2 * cell + 1) * _CELL_HALF + rng.uniform(-jitter, jitter) for cell in (col, row))
    rotation = 0.0 if shape == "circle" else rng.uniform(-_MAX_ROTATION, _MAX_ROTATION)
    rgb = tuple(min(255, max(0, c + rng.randint(-_COLOR_JITTER, _COLOR_JITTER))) for c in COLOR_RGB[color])
    return SceneObject(color, shape, size, position, center, radius, rotation, rgb)


def render_scene(scene: Scene, image_size: int) -> Image.Image:
    """Draw `scene` as an `image_size` x `image_size` RGB image, anti-aliased by 4x supersampling."""
    side = image_size * _SUPERSAMPLE
    canvas = Image.new("RGB", (side, side), scene.background)
    draw = ImageDraw.Draw(canvas)
    for obj in scene.objects:
        cx, cy, r = obj.center[0] * side, obj.center[1] * side, obj.radius * side
        if obj.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=obj.rgb)
        else:
            draw.polygon(_polygon(obj.shape, cx, cy, r * _SHAPE_EXTENT[obj.shape], obj.rotation), fill=obj.rgb)
    return canvas.reduce(_SUPERSAMPLE)


def _polygon(shape: str, cx: float, cy: float, circumradius: float, rotation: float) -> list[tuple[float, float]]:
    """Vertices of an upright square, triangle or five-pointed star centred on (cx, cy), turned by `rotation`°."""
    if shape == "star":
        radii = [circumradius, circumradius * _STAR_INNER_RATIO] * 5
    else:
        radii = [circumradius] * {"square": 4, "triangle": 3}[shape]
    start = -90.0 + (45.0 if shape == "square" else 0.0) + rotation
    step = 360.0 / len(radii)
    return [
        (cx + rad * math.cos(math.radians(start + i * step)), cy + rad * math.sin(math.radians(start + i * step)))
        for i, rad in enumerate(radii)
    ]


def scene_captions(scene: Scene) -> list[str]:
    """Paraphrases of the scene's description; the first is the canonical training target."""
    phrases = [obj.phrase for obj in scene.objects]
    listing = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    count = len(phrases)
    return [
        f"{listing}.",
        f"{_NUMBER_WORDS[count]} shape{'s' if count > 1 else ''}: {listing}.",
        f"an image with {listing}.",
    ]


def scene_questions(
    scene: Scene, rng: random.Random, ask_yes: bool, heldout: bool = False
) -> dict[str, tuple[str, str]]:
    """One (question, answer) pair per question type, all derived from the scene.

    `ask_yes` picks the yes/no answer. A "no" question names a pair absent from the scene: a held-out pair in the
    held-out split, a seen pair elsewhere.
    """
    focus = scene.focus_object
    if ask_yes:
        asked_color, asked_shape = focus.color, focus.shape
    else:
        absent = [p for p in (HELDOUT_COMBINATIONS if heldout else SEEN_COMBINATIONS) if p not in scene.combinations]
        asked_color, asked_shape = rng.choice(absent)
    if rng.random() < 0.5:
        count_question, count = "How many shapes are there?", len(scene.objects)
    else:
        counted = rng.choice([obj.color for obj in scene.objects])
        count_question = f"How many {counted} objects are there?"
        count = sum(obj.color == counted for obj in scene.objects)
    return {
        "color": (f"What color is the {focus.shape}?", focus.color),
        "shape": (f"What shape is the {focus.color} object?", focus.shape),
        "count": (count_question, str(count)),
        "yes_no": (f"Is there a {asked_color} {asked_shape}?", "yes" if ask_yes else "no"),
        "position": (f"Where is the {focus.color} {focus.shape}?", focus.position),
    }


def synthetic_image_id(split: str, index: int, image_size: int, seed: int) -> str:
    """The stable id of one synthetic image."""
    return f"synthetic-{split}-s{seed}-{image_size}px-{index:06d}"


def _image_examples(
    split: str, index: int, image_size: int, seed: int, tasks: Sequence[str], question_types: Sequence[str]
) -> list[dict[str, Any]]:
    """The rows of one synthetic image: its caption and/or one question per requested type."""
    heldout = split == HELDOUT_SPLIT
    rng = scene_rng(split, index, seed)
    scene = sample_scene(rng, heldout=heldout)
    questions = scene_questions(scene, rng, ask_yes=index % 2 == 0, heldout=heldout)
    image = png_image_value(render_scene(scene, image_size))
    image_id = synthetic_image_id(split, index, image_size, seed)
    rows = []
    if "caption" in tasks:
        rows.append(caption_example(image, scene_captions(scene), f"{image_id}-caption", image_id, CAPTION_PROMPT))
    if "vqa" in tasks:
        for question_type in question_types:
            question, answer = questions[question_type]
            references = exact_answer_references(answer)
            example_id = f"{image_id}-{question_type}"
            rows.append(vqa_example(image, question, references, question_type, example_id, image_id))
    return rows


def _check_choices(name: str, given: str | Iterable[str], allowed: Sequence[str]) -> tuple[str, ...]:
    """Return `given` (one value or several) as a tuple, or raise a ValueError naming the allowed values."""
    given = (given,) if isinstance(given, str) else tuple(given)
    unknown = [value for value in given if value not in allowed]
    if unknown or not given:
        raise ValueError(f"{name} must be a non-empty subset of {list(allowed)}, got {list(given)}.")
    return given


def build_synthetic_dataset(
    split: str,
    num_images: int,
    image_size: int = 224,
    seed: int = 0,
    tasks: str | Sequence[str] = TASKS,
    question_types: str | Sequence[str] | None = None,
) -> datasets.Dataset:
    """Generate `num_images` scenes of `split` as a data set in the example schema.

    Each image gives a caption row (task "caption") and one VQA row per question type in `question_types`
    (default: all of `QUESTION_TYPES`), in that order. Image `i` of a split depends only on (`seed`, `split`, `i`),
    so a shorter data set is a prefix of a longer one, and the same arguments give byte-identical images.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; choose one of {list(SPLITS)}.")
    if not isinstance(num_images, int) or num_images < 0:
        raise ValueError(f"num_images must be a non-negative int, got {num_images!r}.")
    if not isinstance(image_size, int) or image_size < _MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be an int >= {_MIN_IMAGE_SIZE}, got {image_size!r}.")
    tasks = _check_choices("tasks", tasks, TASKS)
    question_types = _check_choices(
        "question_types", QUESTION_TYPES if question_types is None else question_types, QUESTION_TYPES
    )
    rows = [
        row
        for index in range(num_images)
        for row in _image_examples(split, index, image_size, seed, tasks, question_types)
    ]
    return examples_to_dataset(rows)


def build_synthetic_splits(
    num_train: int,
    num_val: int,
    num_test: int,
    num_heldout: int,
    image_size: int = 224,
    seed: int = 0,
    tasks: str | Sequence[str] = TASKS,
    question_types: str | Sequence[str] | None = None,
) -> datasets.DatasetDict:
    """All four splits ("train", "validation", "test", "test_heldout"), with the given number of images each."""
    sizes = dict(zip(SPLITS, (num_train, num_val, num_test, num_heldout)))
    return datasets.DatasetDict(
        {
            split: build_synthetic_dataset(split, num, image_size, seed, tasks, question_types)
            for split, num in sizes.items()
        }
    )
