"""Caption share: repeat the caption rows of a training set until they make up a chosen share of its rows.

Describe, then answer reads every answer from the model's own description of the image, so the descriptions carry
what the model binds; a data set with one caption and five questions per image supervises them in 1 row of 6. With
`caption_share=0.5` half the rows of an epoch are captions (each caption row repeated, the other rows once each).
"""

import logging

import datasets

from ..data.schema import CAPTION_TASK
from ..modeling.errors import InvalidDatasetError

logger = logging.getLogger(__name__)


def caption_copies(num_captions: int, num_others: int, share: float) -> int:
    """How many times each caption row appears so that captions make up about `share` of the rows (at least 1)."""
    return max(1, round(share * num_others / ((1.0 - share) * num_captions)))


def with_caption_share(dataset: datasets.Dataset, share: float) -> datasets.Dataset:
    """`dataset` with its caption rows repeated as often as makes captions about `share` of the rows (the other
    rows once each, caption copies after them: the trainer's sampler shuffles)."""
    caption_rows = [row for row, task in enumerate(dataset["task"]) if task == CAPTION_TASK]
    if not caption_rows:
        raise InvalidDatasetError(
            f"caption_share={share} needs caption rows (task 'caption') in the training data, and it has none. "
            "Keep the caption task, or leave caption_share unset."
        )
    copies = caption_copies(len(caption_rows), len(dataset) - len(caption_rows), share)
    if copies == 1:
        logger.info(
            "caption_share=%s: captions are already %d of %d training rows; none repeated.",
            share, len(caption_rows), len(dataset),
        )
        return dataset
    captions = dataset.select(caption_rows)
    logger.info(
        "caption_share=%s: each of %d caption rows appears %d times among %d other rows.",
        share, len(caption_rows), copies, len(dataset) - len(caption_rows),
    )
    return datasets.concatenate_datasets([dataset] + [captions] * (copies - 1))
