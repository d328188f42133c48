"""Joint training on disjoint parameter groups (LLaMA-Adapter V2): image rows and text-only rows run separately.

LLaMA-Adapter V2 trains on image-text pairs and on text-only instructions at once, but each kind of batch updates only
its own parameters: images the "vision" group (visual projection, visual queries, early gates), text the
"instruction" group (late prompts and gates, biases, scales, norms). The adapter does the routing inside one forward:
with `disjoint_groups=True` (the default) a forward with images detaches the instruction group and a forward without
images never touches the vision group, so the other group's gradients stay None and `torch.optim.AdamW` skips those
parameters entirely (no momentum step, no weight decay).

A forward therefore needs all its rows of one kind. A mixed batch (some rows with an image, some without) is split
into its image rows and its text rows here, each part runs as its own forward, and the two losses add up to the loss
of the whole batch (both are normalised by the whole batch's supervised-token count):

    class JointTrainer(transformers.Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            has_image = inputs.pop("has_image")  # [B] bool, added by the collator
            loss = joint_loss(model, inputs, has_image, num_items_in_batch)
            return (loss, None) if return_outputs else loss

`has_image[i]` says whether row i has an image; the batch's `pixel_values` (or `image_features`) hold the images of
the image rows, in row order, as `VisionAdapterProcessor` builds them when text-only rows get no image.
"""

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch

from ..modeling.configuration_vadapter import IGNORE_INDEX
from ..modeling.errors import ImageTokenMismatchError

IMAGE_KEYS = ("pixel_values", "image_features")


def split_by_image(
    batch: Mapping[str, Any], has_image: Union[Sequence[bool], torch.Tensor]
) -> Tuple[Optional[Dict[str, Any]], Optional[Dict[str, Any]]]:
    """(image rows, text-only rows) of a processor batch; None for a part without rows.

    Row tensors (input_ids, attention_mask, labels, ...) are indexed by row; `pixel_values` / `image_features` go to
    the image part whole. Left-padding columns that become empty in a part are dropped.
    """
    has_image = torch.as_tensor(has_image, dtype=torch.bool).flatten()
    num_rows, num_images = has_image.numel(), int(has_image.sum())
    images = {key: batch[key] for key in IMAGE_KEYS if batch.get(key) is not None}
    for key, value in images.items():
        if value.shape[0] != num_images:
            raise ImageTokenMismatchError(
                f"has_image marks {num_images} image rows, but {key} holds {value.shape[0]} images."
            )
    parts = []
    for rows, with_images in ((has_image, True), (~has_image, False)):
        if not bool(rows.any()):
            parts.append(None)
            continue
        part = {}
        for key, value in batch.items():
            if key in IMAGE_KEYS:
                continue
            if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == num_rows:
                value = value[rows]
            part[key] = value
        if with_images:
            part.update(images)
        parts.append(_drop_empty_left_columns(part))
    return parts[0], parts[1]


def _drop_empty_left_columns(part: Dict[str, Any]) -> Dict[str, Any]:
    mask = part.get("attention_mask")
    if mask is None or mask.ndim != 2:
        return part
    used = mask.bool().any(dim=0)
    start = int(used.float().argmax()) if bool(used.any()) else 0
    if start == 0:
        return part
    length = mask.shape[1]
    return {
        key: value[:, start:] if isinstance(value, torch.Tensor) and value.ndim == 2 and value.shape[1] == length else value
        for key, value in part.items()
    }


def supervised_token_count(labels: torch.Tensor) -> int:
    """How many next-token targets the model's loss averages over (labels shifted by one, -100 ignored)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def joint_loss(
    model,
    batch: Mapping[str, Any],
    has_image: Union[Sequence[bool], torch.Tensor],
    num_items_in_batch: Optional[Union[int, torch.Tensor]] = None,
) -> torch.Tensor:
    """The loss of a mixed batch, each kind of row in its own forward (so each trains only its own group).

    Equals the mean loss over the whole batch's supervised tokens (`num_items_in_batch` when the trainer gives it).
    """
    if "labels" not in batch:
        raise ValueError("joint_loss needs labels in the batch.")
    if num_items_in_batch is None:
        num_items_in_batch = max(supervised_token_count(batch["labels"]), 1)
    total = None
    for part in split_by_image(batch, has_image):
        if part is None:
            continue
        loss = model(**part, num_items_in_batch=num_items_in_batch).loss
        total = loss if total is None else total + loss
    return total
