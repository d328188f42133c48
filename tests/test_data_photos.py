"""The bundled real photos: schema, RGB conversion, hand-written rows, and skipping missing source packages."""

from __future__ import annotations

import collections
import logging
import sys

import datasets
import numpy as np
import pytest

from hf_vadapter.data import EXAMPLE_FEATURES, build_photo_dataset, load_photo, photo_names, validate_example_dataset

pytest.importorskip("skimage.data")
pytest.importorskip("sklearn.datasets")
pytest.importorskip("matplotlib.cbook")

SOURCE_MODULES = ("skimage.data", "sklearn.datasets", "matplotlib.cbook")


@pytest.fixture(scope="module")
def photos() -> datasets.Dataset:
    """The photo data set, built once for this module."""
    return build_photo_dataset()


def test_every_photo_is_in_the_dataset(photos):
    validate_example_dataset(photos)
    assert photos.features == EXAMPLE_FEATURES
    assert len(photo_names()) == 18
    assert list(dict.fromkeys(photos["image_id"])) == [f"photo-{name}" for name in photo_names()]
    assert len(set(photos["example_id"])) == len(photos)


def test_each_photo_has_captions_and_two_to_four_questions(photos):
    rows_per_image = collections.defaultdict(list)
    for row in photos.remove_columns("image"):
        rows_per_image[row["image_id"]].append(row)
    for image_id, rows in rows_per_image.items():
        captions = [row for row in rows if row["task"] == "caption"]
        questions = [row for row in rows if row["task"] == "vqa"]
        assert len(captions) == 1, image_id
        assert captions[0]["target"] == captions[0]["references"][0]
        assert all(caption.endswith(".") for caption in captions[0]["references"])
        assert 2 <= len(questions) <= 4, image_id
        for row in questions:
            assert row["prompt"].endswith("?")
            assert row["references"] == [row["target"]] * 10
            assert len(row["target"].split()) <= 3


def test_images_read_back_as_rgb_at_full_size(photos):
    first_rows = photos.select([list(photos["image_id"]).index(f"photo-{name}") for name in ("camera", "retina")])
    assert [image.mode for image in first_rows["image"]] == ["RGB", "RGB"]
    assert [image.size for image in first_rows["image"]] == [(512, 512), (1411, 1411)]


def test_grayscale_and_binary_photos_are_converted_to_rgb():
    camera = load_photo("camera")
    assert camera.mode == "RGB"
    pixels = np.asarray(camera)
    assert np.array_equal(pixels[..., 0], pixels[..., 2])
    horse = np.asarray(load_photo("horse"))
    assert horse.dtype == np.uint8 and set(np.unique(horse)) == {0, 255}
    assert tuple(horse[0, 0]) == (255, 255, 255)
    assert tuple(horse[horse.shape[0] // 2, horse.shape[1] // 2]) == (0, 0, 0)


def test_unknown_photo_name_raises_value_error():
    with pytest.raises(ValueError, match="astronaut"):
        load_photo("mona_lisa")


def test_missing_source_package_raises_import_error_naming_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="scikit-learn"):
        load_photo("china")


def test_missing_source_packages_are_skipped_with_a_warning(monkeypatch, caplog):
    for module in SOURCE_MODULES:
        monkeypatch.setitem(sys.modules, module, None)
    with caplog.at_level(logging.WARNING, logger="hf_vadapter.data.photos"):
        ds = build_photo_dataset()
    assert len(ds) == 0
    validate_example_dataset(ds)
    skipped = [record.getMessage() for record in caplog.records]
    assert len(skipped) == len(photo_names())
    assert any("grace_hopper" in message and "matplotlib" in message for message in skipped)
