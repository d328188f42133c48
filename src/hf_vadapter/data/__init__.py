"""Built-in data: synthetic scenes, bundled real photos, and readers for user data formats."""

from .formats import (
    coco_image_index,
    from_user_dataset,
    read_coco_captions,
    read_imagefolder,
    read_vqa_v2,
    to_example_schema,
)
from .photos import build_photo_dataset, load_photo, photo_names
from .schema import (
    CAPTION_PROMPT,
    EXAMPLE_FEATURES,
    TASKS,
    validate_example_dataset,
)
from .synthetic import (
    COLORS,
    HELDOUT_COMBINATIONS,
    POSITIONS,
    QUESTION_TYPES,
    SEEN_COMBINATIONS,
    SHAPES,
    SIZES,
    SPLITS,
    build_synthetic_dataset,
    build_synthetic_splits,
)

__all__ = [
    "CAPTION_PROMPT",
    "COLORS",
    "EXAMPLE_FEATURES",
    "HELDOUT_COMBINATIONS",
    "POSITIONS",
    "QUESTION_TYPES",
    "SEEN_COMBINATIONS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "TASKS",
    "build_photo_dataset",
    "build_synthetic_dataset",
    "build_synthetic_splits",
    "coco_image_index",
    "from_user_dataset",
    "to_example_schema",
    "load_photo",
    "photo_names",
    "read_coco_captions",
    "read_imagefolder",
    "read_vqa_v2",
    "validate_example_dataset",
]
