"""`VisionAdapterCollator`: example rows (the schema of `hf_vadapter.data`) -> model batches.

Each row's prompt gets one `<image>` when it has an image (text-only rows, task "text", get none), where the
processor's `image_placement` says; the processor wraps it in the LM's chat template and expands the placeholder,
and the target is supervised (labels are -100 elsewhere). Images come as `pixel_values`, or, when the data set went
through a `FeatureCache`, as the cached tower features `image_features` [N, T, L, S, Dv], with exactly the same token
ids. A batch mixing rows with and without images also gets `has_image` [B] (bool), which the trainer pops before the
forward pass.
"""

from typing import Any, Dict, List, Optional, Sequence

import datasets
import torch

from ..modeling.errors import InvalidDatasetError
from .feature_cache import HASH_COLUMN, FeatureStore, decode_image


def has_image(row: Dict[str, Any]) -> bool:
    if row.get(HASH_COLUMN) is not None:
        return bool(row[HASH_COLUMN])
    return row.get("image") is not None


def decode_row_image(row: Dict[str, Any]):
    """The row's image as an RGB PIL image; one that cannot be read names the row, so it can be fixed or dropped."""
    try:
        return decode_image(row["image"])
    except (OSError, ValueError, SyntaxError) as error:  # what Pillow raises for truncated or corrupt files
        raise InvalidDatasetError(
            f"The image of row {row.get('example_id')!r} (image_id {row.get('image_id')!r}) cannot be read: {error}. "
            "Fix or drop that row."
        ) from error


def image_flags(dataset: datasets.Dataset) -> List[bool]:
    """Whether each row has an image, read without decoding any image."""
    if HASH_COLUMN in dataset.column_names:
        return [bool(digest) for digest in dataset[HASH_COLUMN]]
    images = dataset.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
    return [image is not None for image in images["image"]]


class VisionAdapterCollator:
    """Collate schema rows for training (prompts + supervised targets) or generation (prompts only).

    Args:
        processor: the model's `VisionAdapterProcessor`.
        max_length: longest sequence; text is cut, never image placeholders.
        feature_store: a `FeatureStore`; rows with an `image_hash` then feed cached features instead of pixels.
        with_targets: add targets and labels (training, eval loss); False for generation.
    """

    def __init__(
        self,
        processor,
        max_length: Optional[int] = None,
        feature_store: Optional[FeatureStore] = None,
        with_targets: bool = True,
    ):
        self.processor = processor
        self.max_length = max_length
        self.feature_store = feature_store
        self.with_targets = with_targets

    def prompt(self, row: Dict[str, Any]) -> str:
        """The row's prompt with its image placeholder where the processor puts images (`image_placement`)."""
        return self.processor.with_placeholders(row["prompt"], int(has_image(row)))

    def __call__(self, rows: Sequence[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        prompts = [self.prompt(row) for row in rows]
        targets = [row["target"] for row in rows] if self.with_targets else None
        with_image = [has_image(row) for row in rows]
        use_cache = self.feature_store is not None and all(HASH_COLUMN in row for row in rows)
        if use_cache or not any(with_image):
            # Placeholders are in the prompts already; no images are given, so the processor only tokenizes.
            batch = self.processor(text=prompts, text_target=targets, max_length=self.max_length)
            if use_cache and any(with_image):
                digests = [row[HASH_COLUMN] for row, image in zip(rows, with_image) if image]
                batch["image_features"] = self.feature_store.lookup(digests)
        else:
            images: List[list] = [[decode_row_image(row)] if image else [] for row, image in zip(rows, with_image)]
            batch = self.processor(images=images, text=prompts, text_target=targets, max_length=self.max_length)
        batch = dict(batch)
        if any(with_image) and not all(with_image):
            # Rows with and without images: adapters with disjoint parameter groups run the two kinds separately.
            batch["has_image"] = torch.tensor(with_image, dtype=torch.bool)
        return batch

    def token_lengths(self, dataset: datasets.Dataset, chunk_size: int = 1024) -> List[int]:
        """Each row's token count as `__call__` builds it (placeholders expanded), for `group_by_length` batching."""
        texts = dataset.select_columns(["prompt", "target"] if self.with_targets else ["prompt"])
        flags = image_flags(dataset)
        lengths: List[int] = []
        for start in range(0, len(texts), chunk_size):
            rows = texts[start : start + chunk_size]  # {column: [values]}
            prompts = [
                self.prompt({"prompt": prompt, HASH_COLUMN: flag})
                for prompt, flag in zip(rows["prompt"], flags[start : start + chunk_size])
            ]
            batch = self.processor(text=prompts, text_target=rows.get("target"), max_length=self.max_length)
            lengths.extend(batch["attention_mask"].sum(dim=1).tolist())
        return lengths
