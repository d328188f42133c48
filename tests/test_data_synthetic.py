"""The synthetic scene generator: determinism, schema, held-out pairs, balance, and answers checked on pixels."""

from __future__ import annotations

import collections
import re

import datasets
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_vadapter.data import EXAMPLE_FEATURES, validate_example_dataset
from hf_vadapter.data.synthetic import (
    COLOR_RGB,
    COLORS,
    HELDOUT_COMBINATIONS,
    POSITIONS,
    QUESTION_TYPES,
    SEEN_COMBINATIONS,
    SHAPES,
    SPLITS,
    build_synthetic_dataset,
    build_synthetic_splits,
    render_scene,
    sample_scene,
    scene_captions,
    scene_rng,
)

ndimage = pytest.importorskip("scipy.ndimage")

NUM_IMAGES = 40
SIZE = 64


@pytest.fixture(scope="module")
def splits() -> datasets.DatasetDict:
    """Small splits shared by the tests of this module."""
    return build_synthetic_splits(NUM_IMAGES, NUM_IMAGES, NUM_IMAGES, NUM_IMAGES, image_size=SIZE, seed=3)


def image_bytes(ds: datasets.Dataset) -> list[bytes]:
    """The encoded image of every row, without decoding."""
    return [value["bytes"] for value in ds.cast_column("image", datasets.Image(decode=False))["image"]]


def scene_of(image_id: str):
    """Re-derive the scene of a synthetic image from its id."""
    match = re.fullmatch(r"synthetic-(\w+)-s(\d+)-(\d+)px-(\d+)", image_id)
    split, seed, index = match.group(1), int(match.group(2)), int(match.group(4))
    return sample_scene(scene_rng(split, index, seed), heldout=split == "test_heldout")


def nearest_color(rgb: np.ndarray) -> str:
    """The palette colour closest to an RGB value."""
    return min(COLORS, key=lambda name: float(np.sum((np.asarray(COLOR_RGB[name]) - rgb) ** 2)))


def pixel_objects(image) -> list[tuple[str, str]]:
    """(colour, position) of each shape found in the pixels: connected non-background blobs, each with the colour
    of its pixel farthest from the background (anti-aliased edges blend with it) and the cell of its centroid."""
    pixels = np.asarray(image, dtype=float)
    background = pixels[0, 0]
    mask = np.abs(pixels - background).sum(axis=2) > 60
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    side = pixels.shape[0]
    cells = {(1, 0): "top", (0, 1): "left", (1, 1): "center", (2, 1): "right", (1, 2): "bottom"}
    found = []
    for label in range(1, count + 1):
        ys, xs = np.nonzero(labels == label)
        cell = (int(xs.mean() * 3 // side), int(ys.mean() * 3 // side))
        strongest = np.abs(pixels[ys, xs] - background).sum(axis=1).argmax()
        found.append((nearest_color(pixels[ys[strongest], xs[strongest]]), cells[cell]))
    return found


def test_schema_and_split_names(splits):
    assert list(splits) == list(SPLITS)
    for ds in splits.values():
        validate_example_dataset(ds)
        assert ds.features == EXAMPLE_FEATURES
        assert len(ds) == NUM_IMAGES * (1 + len(QUESTION_TYPES))


def test_same_seed_gives_identical_bytes_and_text():
    first = build_synthetic_dataset("train", 6, image_size=48, seed=11)
    second = build_synthetic_dataset("train", 6, image_size=48, seed=11)
    assert image_bytes(first) == image_bytes(second)
    assert first.remove_columns("image").to_dict() == second.remove_columns("image").to_dict()
    other_seed = build_synthetic_dataset("train", 6, image_size=48, seed=12)
    assert image_bytes(first) != image_bytes(other_seed)


def test_shorter_dataset_is_a_prefix():
    short = build_synthetic_dataset("validation", 3, image_size=32)
    long = build_synthetic_dataset("validation", 5, image_size=32)
    assert image_bytes(short) == image_bytes(long)[: len(short)]
    assert list(short["example_id"]) == list(long["example_id"])[: len(short)]


@pytest.mark.parametrize("size", [16, 112, 224])
def test_image_size_is_honoured(size):
    ds = build_synthetic_dataset("test", 2, image_size=size, tasks=("caption",))
    for image in ds["image"]:
        assert image.size == (size, size)
        assert image.mode == "RGB"


def test_splits_draw_different_images(splits):
    all_bytes = [set(image_bytes(ds)) for ds in splits.values()]
    for i, first in enumerate(all_bytes):
        for second in all_bytes[i + 1 :]:
            assert not first & second


def test_heldout_pairs_never_in_train_validation_test_scenes():
    for split in ("train", "validation", "test"):
        for index in range(500):
            assert not sample_scene(scene_rng(split, index, 0)).combinations & set(HELDOUT_COMBINATIONS)


def test_heldout_pairs_never_named_outside_test_heldout(splits):
    phrases = [f"{color} {shape}" for color, shape in HELDOUT_COMBINATIONS]
    for split in ("train", "validation", "test"):
        ds = splits[split]
        texts = list(ds["prompt"]) + list(ds["target"]) + [text for refs in ds["references"] for text in refs]
        assert not [text for text in texts if any(phrase in text for phrase in phrases)]


def test_test_heldout_scenes_and_questions_target_heldout_pairs(splits):
    heldout = set(HELDOUT_COMBINATIONS)
    for row in splits["test_heldout"]:
        scene = scene_of(row["image_id"])
        assert (scene.focus_object.color, scene.focus_object.shape) in heldout
        prompt, target = row["prompt"], row["target"]
        kind = row["question_type"]
        if kind == "color":
            assert (target, prompt.removeprefix("What color is the ").removesuffix("?")) in heldout
        elif kind == "shape":
            assert (prompt.split()[4], target) in heldout
        elif kind in ("yes_no", "position"):
            color, shape = prompt.rstrip("?").split()[-2:]
            assert (color, shape) in heldout
        elif kind == "caption":
            assert any(f"{color} {shape}" in target for color, shape in heldout)


def test_every_colour_and_shape_is_seen_in_training():
    assert {color for color, _ in SEEN_COMBINATIONS} == set(COLORS)
    assert {shape for _, shape in SEEN_COMBINATIONS} == set(SHAPES)
    assert 0.15 <= len(HELDOUT_COMBINATIONS) / (len(COLORS) * len(SHAPES)) <= 0.25


def test_question_types_are_balanced_and_yes_no_is_50_50(splits):
    for ds in splits.values():
        counts = collections.Counter(ds["question_type"])
        assert counts == {"caption": NUM_IMAGES, **{kind: NUM_IMAGES for kind in QUESTION_TYPES}}
        answers = collections.Counter(row["target"] for row in ds if row["question_type"] == "yes_no")
        assert answers == {"yes": NUM_IMAGES // 2, "no": NUM_IMAGES // 2}


def test_tasks_and_question_types_select_rows():
    ds = build_synthetic_dataset("train", 4, image_size=32, tasks=("vqa",), question_types=("count", "color"))
    assert list(ds["question_type"]) == ["count", "color"] * 4
    captions = build_synthetic_dataset("train", 4, image_size=32, tasks=("caption",))
    assert set(captions["task"]) == {"caption"} and len(captions) == 4
    single = build_synthetic_dataset("train", 2, image_size=32, tasks="vqa", question_types="count")
    assert list(single["question_type"]) == ["count", "count"]


def test_answers_agree_with_pixels(splits):
    """Count, colour, position and yes/no answers, re-derived from the rendered pixels alone."""
    for ds in (splits["train"], splits["test_heldout"]):
        for index in range(0, len(ds), 1 + len(QUESTION_TYPES)):
            rows = ds.select(range(index, index + 1 + len(QUESTION_TYPES)))
            found = pixel_objects(rows[0]["image"])
            for row in rows:
                words = row["prompt"].rstrip("?").split()
                if row["question_type"] == "count":
                    counted = found if words[2] == "shapes" else [obj for obj in found if obj[0] == words[2]]
                    assert row["target"] == str(len(counted))
                elif row["question_type"] == "position":
                    assert (words[-2], row["target"]) in found
                elif row["question_type"] == "shape":
                    assert words[4] in {color for color, _ in found}


def test_colour_answer_matches_pixel_at_shape_centre(splits):
    for row in splits["validation"]:
        if row["question_type"] != "color":
            continue
        scene = scene_of(row["image_id"])
        focus = scene.focus_object
        x, y = (int(coordinate * SIZE) for coordinate in focus.center)
        assert nearest_color(np.asarray(row["image"], dtype=float)[y, x]) == row["target"] == focus.color


def test_captions_list_shapes_in_reading_order():
    scene = sample_scene(scene_rng("train", 7, 0))
    caption = scene_captions(scene)[0]
    positions = [obj.position for obj in scene.objects]
    assert positions == sorted(positions, key=POSITIONS.index)
    assert caption.startswith("a ") and caption.endswith(".")
    assert all(f"{obj.size} {obj.color} {obj.shape}" in caption for obj in scene.objects)


def test_shapes_are_anti_aliased():
    scene = sample_scene(scene_rng("train", 0, 0))
    pixels = np.asarray(render_scene(scene, 64)).reshape(-1, 3)
    colours = {tuple(p) for p in pixels}
    assert len(colours) > len(scene.objects) + 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"split": "training", "num_images": 1},
        {"split": "train", "num_images": -1},
        {"split": "train", "num_images": 1, "image_size": 8},
        {"split": "train", "num_images": 1, "tasks": ("captioning",)},
        {"split": "train", "num_images": 1, "question_types": ("colour",)},
        {"split": "train", "num_images": 1, "question_types": ()},
    ],
)
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        build_synthetic_dataset(**kwargs)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(16, 96),
    num=st.integers(0, 3),
    split=st.sampled_from(SPLITS),
)
def test_any_seed_size_and_length_give_valid_consistent_data(seed, size, num, split):
    ds = build_synthetic_dataset(split, num, image_size=size, seed=seed)
    validate_example_dataset(ds)
    assert len(ds) == num * (1 + len(QUESTION_TYPES))
    assert len(set(ds["example_id"])) == len(ds)
    for row in ds:
        assert row["image"].size == (size, size)
        scene = scene_of(row["image_id"])
        focus = scene.focus_object
        expected = {
            "caption": scene_captions(scene)[0],
            "color": focus.color,
            "shape": focus.shape,
            "position": focus.position,
        }
        if row["question_type"] in expected:
            assert row["target"] == expected[row["question_type"]]
        if row["question_type"] == "yes_no":
            color, shape = row["prompt"].rstrip("?").split()[-2:]
            assert row["target"] == ("yes" if (color, shape) in scene.combinations else "no")
        assert row["target"] in row["references"]
        is_heldout = bool(scene.combinations & set(HELDOUT_COMBINATIONS))
        assert is_heldout == (split == "test_heldout")
