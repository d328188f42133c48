"""Describe, then answer, in training: questions learn to read their image's caption as context.

At inference the processor's `describe_prompt` makes generation ask the model for a description first and put it
before every other prompt of the image (`hf_vadapter.evaluation.generation.describe_first`). In training each such
prompt gets the image's reference caption in the same place, so the LM learns to answer from words it reads well,
and the caption rows themselves teach the descriptions. It needs only what any image-text data set has: captions
and questions that share an `image_id`.
"""

import logging
from collections import Counter
from typing import Dict

import datasets

from ..data.schema import CAPTION_TASK
from ..modeling.errors import InvalidDatasetError

logger = logging.getLogger(__name__)


def reference_descriptions(dataset: datasets.Dataset) -> Dict[str, str]:
    """Each image's reference description: the target of its first caption row, by `image_id`."""
    descriptions: Dict[str, str] = {}
    for task, image_id, target in zip(dataset["task"], dataset["image_id"], dataset["target"]):
        if task == CAPTION_TASK and image_id:
            descriptions.setdefault(image_id, target)
    return descriptions


def describe_prompt_of(dataset: datasets.Dataset) -> str:
    """The prompt the caption rows ask most often: the one the model learns to describe with."""
    prompts = Counter(prompt for task, prompt in zip(dataset["task"], dataset["prompt"]) if task == CAPTION_TASK)
    if not prompts:
        raise InvalidDatasetError(
            "describe_then_answer needs caption rows (task 'caption') in the training data: the model learns to "
            "describe images from them, and their captions are the context of the other rows. Keep the caption task."
        )
    return prompts.most_common(1)[0][0]


def with_reference_descriptions(dataset: datasets.Dataset, processor) -> datasets.Dataset:
    """`dataset` with every non-caption row's prompt put after its image's reference caption by
    `processor.with_context`; rows of images without a caption row are kept as they are (a warning counts them)."""
    descriptions = reference_descriptions(dataset)

    def add_context(task: str, image_id: str, prompt: str) -> Dict[str, str]:
        if task == CAPTION_TASK or image_id not in descriptions:
            return {"prompt": prompt}
        return {"prompt": processor.with_context(prompt, descriptions[image_id])}

    uncaptioned = sum(
        task != CAPTION_TASK and image_id and image_id not in descriptions  # text-only rows have no image_id
        for task, image_id in zip(dataset["task"], dataset["image_id"])
    )
    if uncaptioned:
        logger.warning(
            "describe_then_answer: %d of %d rows have no caption row for their image and train without context.",
            uncaptioned,
            len(dataset),
        )
    return dataset.map(add_context, input_columns=["task", "image_id", "prompt"], desc="Adding reference descriptions")
