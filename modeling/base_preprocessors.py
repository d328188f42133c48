"""What the bases' own preprocessors say about a new model: the tower's image side and the placeholder's id.

Construction runs one way: `VisionAdapterForCausalLM.from_vision_text_pretrained` reads these facts into its config
(with the `num_image_tokens` its adapter fixes), and `VisionAdapterProcessor.for_model` is built from that config.
Neither the model nor this file imports the processor.
"""

from typing import Optional

from transformers import AutoImageProcessor, AutoTokenizer
from transformers.utils import is_torchvision_available


def placeholder_token_id(tokenizer_name_or_path, revision: Optional[str], image_token: str) -> int:
    """The id `image_token` gets in the LM's tokenizer once the processor adds it."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_name_or_path, revision=revision)
    return ensure_image_token(tokenizer, image_token)


def load_image_processor(name_or_path, revision: Optional[str] = None):
    """The tower's image processor; without torchvision, its PIL backend is chosen on purpose (no fallback warning)."""
    backend = None if is_torchvision_available() else "pil"
    return AutoImageProcessor.from_pretrained(name_or_path, revision=revision, backend=backend)


def image_size_of(vision_name_or_path, revision: Optional[str], vision_config) -> int:
    """The square image side the tower's image processor produces (its crop size, else its size)."""
    try:
        image_processor = load_image_processor(vision_name_or_path, revision)
    except OSError:
        return vision_config.image_size
    return _processor_image_size(image_processor) or vision_config.image_size


def _processor_image_size(image_processor) -> Optional[int]:
    for attribute in ("crop_size", "size"):
        size = getattr(image_processor, attribute, None)
        if isinstance(size, dict):
            size = size.get("height") or size.get("shortest_edge")
        if isinstance(size, int):
            return size
    return None


def ensure_image_token(tokenizer, image_token: str) -> int:
    if image_token not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"extra_special_tokens": [image_token]}, replace_extra_special_tokens=False)
    return tokenizer.convert_tokens_to_ids(image_token)
