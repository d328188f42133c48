"""Readers that turn user data into the example schema (see `schema`).

- `read_imagefolder`: a folder of images with a ``metadata.jsonl`` (the Hugging Face imagefolder convention).
- `read_coco_captions`: a COCO captions JSON plus its image folder, one row per image.
- `read_vqa_v2`: VQAv2 questions and annotations JSON plus a COCO image folder, one row per question.
- `from_user_dataset`: any `datasets.Dataset` with an image column and a text column.

Images are stored as file paths and read lazily, as `datasets` does for image folders; the ``image`` column
converts them to RGB when read. Every reader raises a ValueError that says what is wrong and what to do.
"""

from __future__ import annotations

import collections
import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import datasets

from .schema import (
    CAPTION_PROMPT,
    EXAMPLE_FEATURES,
    TASKS,
    VQA_TASK,
    caption_example,
    examples_to_columns,
    examples_to_dataset,
    exact_answer_references,
    vqa_example,
)

logger = logging.getLogger(__name__)

IMAGEFOLDER_METADATA = "metadata.jsonl"
IMAGEFOLDER_TEXT_COLUMNS = ("text", "caption", "captions")
"""Caption columns `read_imagefolder` looks for, in this order, when none is named."""
USER_VQA_QUESTION_TYPE = "other"
"""The question type of VQA rows from `from_user_dataset` (VQAv2's answer type for open answers)."""

_COCO_FILE_NAME = re.compile(r"^(?:COCO_[A-Za-z0-9]+_)?(\d+)\.(?:jpe?g|png)$", re.IGNORECASE)
"""`COCO_<split>_<12-digit id>.jpg`, `<12-digit id>.jpg` (COCO 2017) or `<id>.jpg`."""
_MAX_LISTED = 5


def _listing(items: Iterable[Any]) -> str:
    """The first few items and how many there are, for an error message."""
    items = list(items)
    shown = ", ".join(repr(item) for item in items[:_MAX_LISTED])
    return f"{shown}{', ...' if len(items) > _MAX_LISTED else ''} ({len(items)} in all)"


def _require_folder(folder: str | Path, what: str) -> Path:
    """`folder` as an absolute Path (image paths stored from it then work from any directory), or a ValueError."""
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise ValueError(f"The {what} {str(folder)!r} is not a folder; pass the folder that holds the images.")
    return folder


def _require_files(paths: Iterable[Path], source: str) -> None:
    """Raise a ValueError listing the image files of `source` that do not exist."""
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise ValueError(f"{source} names image files that do not exist: {_listing(missing)}. Check the image folder.")


def _read_json(path: str | Path, required_keys: Iterable[str], what: str) -> dict[str, Any]:
    """Load a JSON object and check that it has `required_keys`; ValueError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"The {what} file {str(path)!r} does not exist.")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"The {what} file {str(path)!r} is not valid JSON: {error}.") from error
    missing = [key for key in required_keys if not isinstance(content, dict) or key not in content]
    if missing:
        raise ValueError(f"The {what} file {str(path)!r} lacks the keys {missing}; is it the right file?")
    return content


def _require_keys(record: dict[str, Any], keys: Iterable[str], where: str) -> None:
    """Raise a ValueError if `record` lacks any of `keys`."""
    missing = [key for key in keys if key not in record]
    if missing:
        raise ValueError(f"{where} lacks the fields {missing}; it has {sorted(record)}.")


def _as_texts(value: Any, where: str) -> list[str]:
    """A caption or answer value (a string, or a non-empty list of strings) as a list of strings."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(text, str) for text in texts):
        raise ValueError(f"{where} must be a string or a non-empty list of strings, got {value!r}.")
    return texts


def read_imagefolder(
    folder: str | Path, text_column: str | None = None, prompt: str = CAPTION_PROMPT
) -> datasets.Dataset:
    """Read an imagefolder: images plus ``metadata.jsonl`` lines ``{"file_name": ..., "<text_column>": ...}``.

    The text is a caption or a list of captions (the first is the target). `text_column` defaults to the first of
    `IMAGEFOLDER_TEXT_COLUMNS` found in the first line. The image id is the file name, relative to `folder`.
    """
    folder = _require_folder(folder, "imagefolder")
    metadata_path = folder / IMAGEFOLDER_METADATA
    if not metadata_path.is_file():
        raise ValueError(
            f"{str(folder)!r} has no {IMAGEFOLDER_METADATA}; add one line per image, e.g. "
            '{"file_name": "0001.png", "text": "a red car."}'
        )
    lines = [line for line in metadata_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(f"{metadata_path}, line {number}, is not valid JSON: {error}.") from error
    if not records:
        raise ValueError(f"{metadata_path} is empty; add one line per image.")
    if text_column is None:
        text_column = next((name for name in IMAGEFOLDER_TEXT_COLUMNS if name in records[0]), None)
        if text_column is None:
            raise ValueError(
                f"{metadata_path} has none of the caption columns {list(IMAGEFOLDER_TEXT_COLUMNS)}; its first line "
                f"has {sorted(records[0])}. Pass text_column=."
            )
    for number, record in enumerate(records, start=1):
        _require_keys(record, ("file_name", text_column), f"{metadata_path}, line {number},")
    file_names = [record["file_name"] for record in records]
    duplicates = sorted(name for name, count in collections.Counter(file_names).items() if count > 1)
    if duplicates:
        raise ValueError(
            f"{metadata_path} lists these files more than once: {_listing(duplicates)}. Give each image one line, "
            "with all its captions as a list."
        )
    _require_files((folder / name for name in file_names), str(metadata_path))
    return examples_to_dataset(
        [
            caption_example(
                str(folder / record["file_name"]),
                _as_texts(record[text_column], f"{metadata_path}: {text_column!r} of {record['file_name']!r}"),
                f"{record['file_name']}-caption",
                record["file_name"],
                prompt,
            )
            for record in records
        ]
    )


def read_coco_captions(
    annotations_file: str | Path, image_root: str | Path, prompt: str = CAPTION_PROMPT
) -> datasets.Dataset:
    """Read COCO captions (``captions_*.json``): one row per image, all its captions as references.

    The target is the image's first caption in the file's annotation order: COCO's captions are equally valid,
    and a fixed choice keeps the data deterministic. Captions are stripped of surrounding whitespace (COCO's
    sometimes end in a newline). Images with no caption are skipped (logged).
    """
    image_root = _require_folder(image_root, "COCO image root")
    content = _read_json(annotations_file, ("images", "annotations"), "COCO captions")
    file_names = {}
    for image in content["images"]:
        _require_keys(image, ("id", "file_name"), f"A COCO image entry ({image!r})")
        file_names[image["id"]] = image["file_name"]
    captions: dict[Any, list[str]] = {}
    for annotation in content["annotations"]:
        _require_keys(annotation, ("image_id", "caption"), f"A COCO annotation ({annotation!r})")
        if annotation["image_id"] not in file_names:
            raise ValueError(
                f"A COCO annotation names image_id {annotation['image_id']!r}, which is not in 'images'. "
                "Use the annotations file that belongs to this image list."
            )
        captions.setdefault(annotation["image_id"], []).append(annotation["caption"].strip())
    uncaptioned = [image_id for image_id in file_names if image_id not in captions]
    if uncaptioned:
        logger.warning("Skipping %d COCO images without captions: %s", len(uncaptioned), _listing(uncaptioned))
    paths = {image_id: image_root / file_names[image_id] for image_id in file_names if image_id in captions}
    _require_files(paths.values(), f"The COCO captions file {str(annotations_file)!r}")
    return examples_to_dataset(
        [
            caption_example(str(path), captions[image_id], f"{image_id}-caption", str(image_id), prompt)
            for image_id, path in paths.items()
        ]
    )


def coco_image_index(image_root: str | Path) -> dict[int, Path]:
    """Map COCO image ids to the files of `image_root` named `COCO_<split>_<id>.jpg`, `<id>.jpg` or `<id>.png`."""
    image_root = _require_folder(image_root, "COCO image root")
    index: dict[int, Path] = {}
    for path in sorted(image_root.iterdir()):
        match = _COCO_FILE_NAME.match(path.name)
        if match is None:
            continue
        image_id = int(match.group(1))
        if image_id in index:
            raise ValueError(
                f"Both {index[image_id].name!r} and {path.name!r} in {str(image_root)!r} hold image id {image_id}; "
                "keep one image per id in the folder."
            )
        index[image_id] = path
    return index


def read_vqa_v2(
    questions_file: str | Path, annotations_file: str | Path, image_root: str | Path
) -> datasets.Dataset:
    """Read VQAv2: one row per question, target = ``multiple_choice_answer``, references = the annotators' answers.

    `question_type` is the annotation's ``answer_type`` ("yes/no", "number" or "other"). Images are found in
    `image_root` by id (see `coco_image_index`).
    """
    questions = _read_json(questions_file, ("questions",), "VQAv2 questions")["questions"]
    annotations = _read_json(annotations_file, ("annotations",), "VQAv2 annotations")["annotations"]
    by_question = {}
    for annotation in annotations:
        _require_keys(
            annotation, ("question_id", "answers", "multiple_choice_answer", "answer_type"), "A VQAv2 annotation"
        )
        by_question[annotation["question_id"]] = annotation
    images = coco_image_index(image_root)
    rows = []
    for question in questions:
        _require_keys(question, ("question_id", "image_id", "question"), "A VQAv2 question")
        question_id, image_id = question["question_id"], question["image_id"]
        if question_id not in by_question:
            raise ValueError(
                f"VQAv2 question {question_id} has no annotation in {str(annotations_file)!r}; use the annotations "
                "file of the same split as the questions file."
            )
        if image_id not in images:
            raise ValueError(
                f"VQAv2 question {question_id} needs image {image_id}, but {str(image_root)!r} has no "
                f"COCO_<split>_<12-digit id>.jpg or {image_id}.jpg."
            )
        annotation = by_question[question_id]
        answers = [answer["answer"] for answer in annotation["answers"]]
        rows.append(
            vqa_example(
                str(images[image_id]),
                question["question"],
                answers,
                annotation["answer_type"],
                str(question_id),
                str(image_id),
                target=annotation["multiple_choice_answer"],
            )
        )
    return examples_to_dataset(rows)


def _is_string(feature: Any) -> bool:
    """Whether a feature is a string value."""
    return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")


def _column_feature(ds: datasets.Dataset, column: str, role: str) -> Any:
    """The feature of `column`, or a ValueError naming the data set's columns."""
    if column not in ds.features:
        raise ValueError(f"The {role} column {column!r} is not in the data set; its columns are {ds.column_names}.")
    return ds.features[column]


def _check_user_columns(
    ds: datasets.Dataset, image_column: str, text_column: str, prompt_column: str | None
) -> None:
    """Check that the columns exist and hold images or paths, texts (or lists of them), and prompts."""
    image_feature = _column_feature(ds, image_column, "image")
    if not (isinstance(image_feature, datasets.Image) or _is_string(image_feature)):
        raise ValueError(
            f"The image column {image_column!r} is {image_feature!r}; it must be a datasets.Image column or hold "
            "image file paths."
        )
    text_feature = _column_feature(ds, text_column, "text")
    if not (_is_string(text_feature) or isinstance(text_feature, datasets.List) and _is_string(text_feature.feature)):
        raise ValueError(f"The text column {text_column!r} is {text_feature!r}; it must hold strings or lists of them.")
    if prompt_column is not None and not _is_string(_column_feature(ds, prompt_column, "prompt")):
        raise ValueError(
            f"The prompt column {prompt_column!r} is {ds.features[prompt_column]!r}; it must hold strings."
        )


def from_user_dataset(
    ds: datasets.Dataset,
    image_column: str = "image",
    *,
    text_column: str,
    prompt_column: str | None = None,
    task: str = "caption",
) -> datasets.Dataset:
    """Adapt any `datasets.Dataset` with an image column and a text column to the example schema.

    `image_column` holds images (`datasets.Image`) or image file paths (strings). `text_column` holds the target:
    a string, or a list of strings whose first is the target and all are references. For ``task="caption"`` the
    prompt is `prompt_column` if given, else "Describe the image."; ``task="vqa"`` needs `prompt_column` (the
    questions), and its rows get question type "other"; a single answer string is an exact answer, repeated as
    ten annotators' answers (see `exact_answer_references`). Ids are the row index, as strings: the adapter cannot know
    which rows share an image, so each row has its own image id. Images are passed through, not re-encoded.
    """
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose one of {list(TASKS)}.")
    if task == VQA_TASK and prompt_column is None:
        raise ValueError("task='vqa' needs prompt_column=, the column that holds the questions.")
    _check_user_columns(ds, image_column, text_column, prompt_column)
    ds = ds.cast_column(image_column, datasets.Image(decode=False))

    def user_example(image: Any, text: Any, prompt: str | None, index: int) -> dict[str, Any]:
        """One row in the example schema."""
        texts = _as_texts(text, f"Row {index}'s {text_column!r}")
        if task == VQA_TASK:
            answers = exact_answer_references(text) if isinstance(text, str) else texts
            return vqa_example(image, prompt, answers, USER_VQA_QUESTION_TYPE, str(index), str(index))
        return caption_example(image, texts, str(index), str(index), CAPTION_PROMPT if prompt is None else prompt)

    def to_schema(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        """A batch of user rows as a batch of schema rows."""
        prompts = batch[prompt_column] if prompt_column is not None else [None] * len(indices)
        return examples_to_columns(
            [user_example(*values) for values in zip(batch[image_column], batch[text_column], prompts, indices)]
        )

    return ds.map(
        to_schema, batched=True, with_indices=True, remove_columns=ds.column_names, features=EXAMPLE_FEATURES
    )


# The column layouts of user data sets mapped without being asked, first match wins:
# (columns that must exist, from_user_dataset arguments).
COMMON_LAYOUTS = (
    (("image", "question", "answer"), dict(text_column="answer", prompt_column="question", task=VQA_TASK)),
    (("image", "caption"), dict(text_column="caption")),
    (("image", "text"), dict(text_column="text")),
)


def to_example_schema(ds: datasets.Dataset, name: str = "the data set") -> datasets.Dataset:
    """`ds` itself when it follows the example schema, else mapped by `from_user_dataset` from the first of
    `COMMON_LAYOUTS` its columns hold (image + question + answer, image + caption, image + text), with a log line
    saying which mapping was used. Other layouts are returned as they are, for the schema check to name them."""
    if all(column in ds.column_names for column in EXAMPLE_FEATURES):
        return ds
    for columns, mapping in COMMON_LAYOUTS:
        if all(column in ds.column_names for column in columns):
            arguments = ", ".join(f"{key}={value!r}" for key, value in mapping.items())
            logger.warning(
                "%s has the columns %s, not the example schema: mapping it with "
                "from_user_dataset(image_column='image', %s).",
                name, ds.column_names, arguments,
            )
            return from_user_dataset(ds, "image", **mapping)
    return ds
