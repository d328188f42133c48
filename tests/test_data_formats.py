"""Readers of user data (imagefolder, COCO captions, VQAv2, any `datasets` data set) on tiny fixtures."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from hf_vadapter.data import (
    EXAMPLE_FEATURES,
    coco_image_index,
    from_user_dataset,
    read_coco_captions,
    read_imagefolder,
    read_vqa_v2,
    validate_example_dataset,
)

FIXTURES = Path(__file__).parent / "fixtures"
IMAGEFOLDER = FIXTURES / "imagefolder"
COCO_IMAGES = FIXTURES / "coco" / "images"
COCO_CAPTIONS = FIXTURES / "coco" / "captions.json"
VQA_QUESTIONS = FIXTURES / "vqav2" / "questions.json"
VQA_ANNOTATIONS = FIXTURES / "vqav2" / "annotations.json"


def mean_rgb(image: Image.Image) -> tuple[int, ...]:
    """The mean colour of an image, rounded."""
    return tuple(int(round(value)) for value in np.asarray(image, dtype=float).mean(axis=(0, 1)))


def write_json(path: Path, content) -> Path:
    """Write `content` as JSON to `path` and return it."""
    path.write_text(json.dumps(content))
    return path


def copy_imagefolder(tmp_path: Path, metadata_lines: list[str]) -> Path:
    """The fixture imagefolder's images with another metadata.jsonl."""
    folder = tmp_path / "folder"
    shutil.copytree(IMAGEFOLDER, folder)
    (folder / "metadata.jsonl").write_text("\n".join(metadata_lines) + "\n")
    return folder


# --- imagefolder -------------------------------------------------------------------------------------------------


def test_imagefolder_reads_captions_and_converts_to_rgb():
    ds = read_imagefolder(IMAGEFOLDER)
    validate_example_dataset(ds)
    assert ds.features == EXAMPLE_FEATURES
    assert list(ds["image_id"]) == ["red.png", "gray.png"]
    assert list(ds["target"]) == ["a red square.", "a gray rectangle."]
    assert ds[1]["references"] == ["a gray rectangle.", "a plain gray image."]
    assert set(ds["task"]) == {"caption"} and set(ds["prompt"]) == {"Describe the image."}
    red, gray = ds["image"]
    assert red.mode == gray.mode == "RGB"
    assert gray.size == (16, 12) and mean_rgb(gray) == (128, 128, 128)
    assert mean_rgb(red) == (220, 30, 30)


def test_imagefolder_images_read_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(FIXTURES)
    ds = read_imagefolder("imagefolder")
    monkeypatch.chdir(tmp_path)
    assert mean_rgb(ds[0]["image"]) == (220, 30, 30)


def test_imagefolder_finds_a_caption_column(tmp_path):
    folder = copy_imagefolder(tmp_path, [json.dumps({"file_name": "red.png", "caption": "red."})])
    assert list(read_imagefolder(folder)["target"]) == ["red."]
    folder = copy_imagefolder(tmp_path / "b", [json.dumps({"file_name": "red.png", "label": "red."})])
    assert list(read_imagefolder(folder, text_column="label")["target"]) == ["red."]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([json.dumps({"file_name": "red.png", "label": "x"})], "none of the caption columns"),
        ([json.dumps({"file_name": "nope.png", "text": "x"})], "do not exist"),
        (["{not json"], "not valid JSON"),
        ([json.dumps({"text": "x"})], "file_name"),
        ([json.dumps({"file_name": "red.png", "text": "x"})] * 2, "more than once"),
        ([json.dumps({"file_name": "red.png", "text": []})], "non-empty list"),
        ([], "empty"),
    ],
)
def test_imagefolder_errors_say_what_is_wrong(tmp_path, lines, message):
    with pytest.raises(ValueError, match=message):
        read_imagefolder(copy_imagefolder(tmp_path, lines))


def test_imagefolder_without_metadata_or_folder(tmp_path):
    with pytest.raises(ValueError, match="metadata.jsonl"):
        read_imagefolder(tmp_path)
    with pytest.raises(ValueError, match="not a folder"):
        read_imagefolder(tmp_path / "missing")


# --- COCO captions -----------------------------------------------------------------------------------------------


def test_coco_captions_one_row_per_image_all_captions_as_references(caplog):
    with caplog.at_level(logging.WARNING, logger="hf_vadapter.data.formats"):
        ds = read_coco_captions(COCO_CAPTIONS, COCO_IMAGES)
    validate_example_dataset(ds)
    assert list(ds["image_id"]) == ["1", "2", "3"]
    assert ds[0]["references"] == ["a blue square.", "a plain blue image."]
    assert list(ds["target"]) == ["a blue square.", "a dark gray square.", "a green square."]
    assert "without captions" in caplog.text
    images = ds["image"]
    assert [image.mode for image in images] == ["RGB"] * 3
    assert mean_rgb(images[1])[0] == mean_rgb(images[1])[2]


def test_coco_captions_errors(tmp_path):
    content = json.loads(COCO_CAPTIONS.read_text())
    with pytest.raises(ValueError, match="lacks the keys"):
        read_coco_captions(write_json(tmp_path / "a.json", {"images": []}), COCO_IMAGES)
    unknown = dict(content, annotations=content["annotations"] + [{"image_id": 99, "caption": "x"}])
    with pytest.raises(ValueError, match="image_id 99"):
        read_coco_captions(write_json(tmp_path / "b.json", unknown), COCO_IMAGES)
    missing_file = dict(content, annotations=content["annotations"] + [{"image_id": 4, "caption": "x"}])
    with pytest.raises(ValueError, match="COCO_val2014_000000000004.jpg"):
        read_coco_captions(write_json(tmp_path / "c.json", missing_file), COCO_IMAGES)
    with pytest.raises(ValueError, match="does not exist"):
        read_coco_captions(tmp_path / "missing.json", COCO_IMAGES)
    (tmp_path / "d.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_coco_captions(tmp_path / "d.json", COCO_IMAGES)


# --- VQAv2 -------------------------------------------------------------------------------------------------------


def test_coco_image_index_understands_all_three_naming_styles():
    index = coco_image_index(COCO_IMAGES)
    assert {image_id: path.name for image_id, path in index.items()} == {
        1: "COCO_val2014_000000000001.jpg",
        2: "2.jpg",
        3: "000000000003.jpg",
    }


def test_vqa_v2_rows_use_multiple_choice_answer_and_all_answers():
    ds = read_vqa_v2(VQA_QUESTIONS, VQA_ANNOTATIONS, COCO_IMAGES)
    validate_example_dataset(ds)
    assert list(ds["example_id"]) == ["100", "101", "102"]
    assert list(ds["image_id"]) == ["1", "2", "3"]
    assert list(ds["target"]) == ["blue", "no", "1"]
    assert list(ds["question_type"]) == ["other", "yes/no", "number"]
    assert list(ds["prompt"]) == ["What color is the image?", "Is the image colorful?", "How many squares are there?"]
    assert ds[0]["references"] == ["blue"] * 8 + ["dark blue", "navy"]
    assert all(len(references) == 10 for references in ds["references"])
    blue, gray, green = (mean_rgb(image) for image in ds["image"])
    assert blue[2] > 200 and green[1] > 180 and gray[0] == gray[2]


def test_vqa_v2_errors(tmp_path):
    questions = json.loads(VQA_QUESTIONS.read_text())
    annotations = json.loads(VQA_ANNOTATIONS.read_text())
    extra = {"question_id": 103, "image_id": 3, "question": "Is it green?"}
    unanswered = write_json(tmp_path / "q1.json", dict(questions, questions=questions["questions"] + [extra]))
    with pytest.raises(ValueError, match="question 103 has no annotation"):
        read_vqa_v2(unanswered, VQA_ANNOTATIONS, COCO_IMAGES)
    no_image = dict(extra, image_id=7)
    annotated = dict(annotations["annotations"][0], question_id=103, image_id=7)
    with pytest.raises(ValueError, match="needs image 7"):
        read_vqa_v2(
            write_json(tmp_path / "q2.json", dict(questions, questions=questions["questions"] + [no_image])),
            write_json(tmp_path / "a2.json", dict(annotations, annotations=annotations["annotations"] + [annotated])),
            COCO_IMAGES,
        )
    with pytest.raises(ValueError, match="lacks the keys"):
        read_vqa_v2(VQA_ANNOTATIONS, VQA_ANNOTATIONS, COCO_IMAGES)
    twice = tmp_path / "images"
    shutil.copytree(COCO_IMAGES, twice)
    shutil.copy(twice / "2.jpg", twice / "COCO_val2014_000000000002.jpg")
    with pytest.raises(ValueError, match="image id 2"):
        read_vqa_v2(VQA_QUESTIONS, VQA_ANNOTATIONS, twice)


# --- any datasets data set ---------------------------------------------------------------------------------------


def test_from_user_dataset_with_images_and_caption_lists():
    user = datasets.Dataset.from_dict(
        {
            "picture": [Image.new("L", (8, 8), 100), Image.new("RGB", (8, 4), (1, 2, 3))],
            "captions": [["a gray square.", "gray."], ["a dark strip."]],
            "extra": [1, 2],
        }
    )
    ds = from_user_dataset(user, "picture", text_column="captions")
    validate_example_dataset(ds)
    assert ds.column_names == list(EXAMPLE_FEATURES)
    assert list(ds["target"]) == ["a gray square.", "a dark strip."]
    assert ds[0]["references"] == ["a gray square.", "gray."]
    assert list(ds["example_id"]) == ["0", "1"] and list(ds["question_type"]) == ["caption"] * 2
    assert [image.mode for image in ds["image"]] == ["RGB", "RGB"]
    assert mean_rgb(ds[1]["image"]) == (1, 2, 3)


def test_from_user_dataset_vqa_with_paths():
    user = datasets.Dataset.from_dict(
        {"path": [str(IMAGEFOLDER / "red.png")], "question": ["What color is it?"], "answer": ["red"]}
    )
    ds = from_user_dataset(user, "path", text_column="answer", prompt_column="question", task="vqa")
    validate_example_dataset(ds)
    row = ds[0]
    assert (row["task"], row["prompt"], row["target"]) == ("vqa", "What color is it?", "red")
    assert row["question_type"] == "other"
    assert row["references"] == ["red"] * 10
    assert mean_rgb(row["image"]) == (220, 30, 30)


def test_from_user_dataset_errors():
    user = datasets.Dataset.from_dict({"image": [str(IMAGEFOLDER / "red.png")], "text": ["x"], "number": [3]})
    with pytest.raises(ValueError, match="'caption' is not in the data set"):
        from_user_dataset(user, text_column="caption")
    with pytest.raises(ValueError, match="must hold strings"):
        from_user_dataset(user, text_column="number")
    with pytest.raises(ValueError, match="image file paths"):
        from_user_dataset(user, "number", text_column="text")
    with pytest.raises(ValueError, match="prompt_column"):
        from_user_dataset(user, text_column="text", task="vqa")
    with pytest.raises(ValueError, match="Unknown task"):
        from_user_dataset(user, text_column="text", task="detection")


def test_validate_example_dataset_names_missing_and_wrong_columns():
    good = read_imagefolder(IMAGEFOLDER)
    with pytest.raises(ValueError, match=r"missing columns \['target'\]"):
        validate_example_dataset(good.remove_columns("target"))
    with pytest.raises(ValueError, match="'image' is Image"):
        validate_example_dataset(good.cast_column("image", datasets.Image()))
    with pytest.raises(ValueError, match="unknown task values"):
        validate_example_dataset(good.map(lambda row: {"task": "detection"}))
    with pytest.raises(ValueError, match="DatasetDict"):
        validate_example_dataset(datasets.DatasetDict({"train": good}))
