"""The one example schema every hf_vadapter data set follows, and helpers that build rows in it.

A data set is a `datasets.Dataset` with exactly these columns:

- ``image``: an image (``datasets.Image(mode="RGB")``, so it reads back as an RGB PIL image);
- ``task``: ``"caption"`` or ``"vqa"``;
- ``prompt``: the user instruction without any image placeholder ("Describe the image.", "What color is the circle?");
- ``target``: the one reference text trained on;
- ``references``: every acceptable reference (caption paraphrases, or VQA answers as in VQAv2's ten annotators);
- ``question_type``: ``"caption"`` for captions; for VQA a type such as ``"color"`` or VQAv2's ``answer_type``;
- ``example_id``: a stable id of the row; ``image_id``: a stable id of the image (several questions share one).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import datasets
from PIL import Image

CAPTION_TASK = "caption"
VQA_TASK = "vqa"
TASKS = (CAPTION_TASK, VQA_TASK)

CAPTION_PROMPT = "Describe the image."
CAPTION_QUESTION_TYPE = "caption"

NUM_VQA_ANSWERS = 10
"""VQAv2 collects ten annotator answers per question; exact answers are repeated to that length."""

EXAMPLE_FEATURES = datasets.Features(
    {
        "image": datasets.Image(mode="RGB"),
        "task": datasets.Value("string"),
        "prompt": datasets.Value("string"),
        "target": datasets.Value("string"),
        "references": datasets.List(datasets.Value("string")),
        "question_type": datasets.Value("string"),
        "example_id": datasets.Value("string"),
        "image_id": datasets.Value("string"),
    }
)

ImageValue = Any
"""Whatever `datasets.Image` encodes: a PIL image, a file path, or a ``{"bytes": ..., "path": ...}`` dict."""


def png_image_value(image: Image.Image) -> dict[str, Any]:
    """Encode `image` once as PNG for the `image` column (fast compression; equal pixels give equal bytes).

    Rows that share an image can share this value, so the image is not re-encoded per row.
    """
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return {"bytes": buffer.getvalue(), "path": None}


def caption_example(
    image: ImageValue,
    captions: Sequence[str],
    example_id: str,
    image_id: str,
    prompt: str = CAPTION_PROMPT,
) -> dict[str, Any]:
    """A caption row: the first caption is the training target, all of them are references."""
    if not captions:
        raise ValueError(f"Example {example_id!r} has no caption; give at least one.")
    return {
        "image": image,
        "task": CAPTION_TASK,
        "prompt": prompt,
        "target": captions[0],
        "references": list(captions),
        "question_type": CAPTION_QUESTION_TYPE,
        "example_id": example_id,
        "image_id": image_id,
    }


def vqa_example(
    image: ImageValue,
    question: str,
    answers: Sequence[str],
    question_type: str,
    example_id: str,
    image_id: str,
    target: str | None = None,
) -> dict[str, Any]:
    """A VQA row: `target` (default: the first answer) is trained on, all `answers` are references."""
    if not answers:
        raise ValueError(f"Example {example_id!r} has no answer; give at least one.")
    return {
        "image": image,
        "task": VQA_TASK,
        "prompt": question,
        "target": answers[0] if target is None else target,
        "references": list(answers),
        "question_type": question_type,
        "example_id": example_id,
        "image_id": image_id,
    }


def exact_answer_references(answer: str) -> list[str]:
    """References for a question with one exact answer: as if all ten VQAv2 annotators agreed.

    With VQAv2's accuracy, min(#matching annotators / 3, 1), the exact answer then scores 1.0, as it does with any
    "matches a reference" metric.
    """
    return [answer] * NUM_VQA_ANSWERS


def examples_to_columns(examples: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Turn row dicts into the schema's columns (a batch, as `datasets.Dataset.map` returns)."""
    return {name: [example[name] for example in examples] for name in EXAMPLE_FEATURES}


def examples_to_dataset(examples: Sequence[dict[str, Any]]) -> datasets.Dataset:
    """Build an in-memory `datasets.Dataset` in the example schema from row dicts (none gives an empty one)."""
    return datasets.Dataset.from_dict(examples_to_columns(examples), features=EXAMPLE_FEATURES)


def validate_example_dataset(ds: datasets.Dataset) -> None:
    """Check that `ds` follows the example schema; raise a ValueError naming every problem found.

    Columns beyond the schema's are allowed and ignored. The `task` column must hold only "caption" or "vqa".
    """
    if not isinstance(ds, datasets.Dataset):
        raise ValueError(
            f"Expected a datasets.Dataset, got {type(ds).__name__}; for a DatasetDict validate each split."
        )
    missing = [name for name in EXAMPLE_FEATURES if name not in ds.features]
    wrong = [
        f"{name!r} is {ds.features[name]!r}, expected {expected!r}"
        for name, expected in EXAMPLE_FEATURES.items()
        if name in ds.features and ds.features[name] != expected
    ]
    problems = []
    if missing:
        problems.append(f"missing columns {missing} (the data set has {list(ds.column_names)})")
    if wrong:
        problems.append("wrong column types: " + "; ".join(wrong))
    if not missing:
        unknown_tasks = sorted(set(ds.unique("task")) - set(TASKS))
        if unknown_tasks:
            problems.append(f"unknown task values {unknown_tasks}, expected only {list(TASKS)}")
    if problems:
        raise ValueError(
            "The data set does not follow the hf_vadapter example schema: "
            + " | ".join(problems)
            + ". Build it with hf_vadapter.data (for example from_user_dataset) or cast it to "
            "hf_vadapter.data.EXAMPLE_FEATURES."
        )
