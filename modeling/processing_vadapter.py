"""`VisionAdapterProcessor`: the tower's image processor and the LM's tokenizer, with `<image>` expansion.

Each `<image>` in a prompt becomes exactly `num_image_tokens` placeholder ids. Placeholders are never truncated:
over-long sequences lose text tokens only, with a warning. With `text_target`, labels supervise the target and its
end-of-sequence token only; prompt, image and padding positions are -100.
"""

from typing import List, Optional, Sequence, Tuple, Union

import torch
from PIL import Image, ImageOps
from transformers import AutoTokenizer, BatchFeature, ProcessorMixin
from transformers.utils import logging

from .base_preprocessors import ensure_image_token, load_image_processor
from .configuration_vadapter import IGNORE_INDEX
from .chat_messages import PLAIN_CHAT_TEMPLATE, flatten_conversations, is_templated, template_markers
from .errors import ImageTokenMismatchError, InvalidImageError, InvalidPromptError

logger = logging.get_logger(__name__)

MAX_IMAGE_PIXELS = 64_000_000  # larger images are refused rather than decoded into tens of GB
IMAGE_PLACEMENTS = ("start", "end")
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # 16/32-bit integer and float images
EXIF_ORIENTATION = 0x0112  # where images go in a prompt without placeholders
# How text about the image (an expert's, or the model's own description) goes before a prompt.
CONTEXT_TEMPLATE = "Context: {context}\n{prompt}"
ImageLike = Image.Image


def to_rgb(image: ImageLike) -> ImageLike:
    """Convert grayscale, palette, CMYK or alpha images to RGB (alpha over white), refusing empty or huge ones."""
    if not isinstance(image, Image.Image):
        raise InvalidImageError(f"Expected a PIL image, got {type(image).__name__}.")
    width, height = image.size
    if width == 0 or height == 0:
        raise InvalidImageError(f"The image is empty ({width}x{height}).")
    if width * height > MAX_IMAGE_PIXELS:
        raise InvalidImageError(
            f"The image is {width}x{height} ({width * height:,} pixels), over the {MAX_IMAGE_PIXELS:,}-pixel limit. "
            "Downscale it first."
        )
    if image.getexif().get(EXIF_ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)  # as cameras and browsers show it
    if image.mode in HIGH_DEPTH_MODES:
        image = _to_8_bit(image)
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _to_8_bit(image: ImageLike) -> ImageLike:
    """A 16-bit, 32-bit or float grayscale image scaled by its real range, from min(0, lowest) to its highest
    value, onto 0..255 ("L"). A plain convert would clip 16-bit values at 255 (white) and floats in [0, 1] to black."""
    image = image.convert("F")
    lowest, highest = image.getextrema()
    lowest = min(lowest, 0.0)
    scale = 255.0 / (highest - lowest) if highest > lowest else 0.0
    return image.point(lambda value: value * scale - lowest * scale).convert("L")


def _check_context_settings(describe_prompt: Optional[str], context_template: str, image_token: str) -> None:
    if describe_prompt is not None and (not isinstance(describe_prompt, str) or not describe_prompt.strip()):
        raise ValueError(f"describe_prompt must be a non-empty prompt or None, got {describe_prompt!r}.")
    if describe_prompt is not None and image_token in describe_prompt:
        raise ValueError(
            f"describe_prompt {describe_prompt!r} holds the image placeholder {image_token!r}; give the bare "
            "instruction, the image goes where `image_placement` says."
        )
    try:
        context_template.format(context="", prompt="")
    except (KeyError, IndexError, ValueError, AttributeError) as error:
        raise ValueError(
            f"context_template {context_template!r} does not format with only {{context}} and {{prompt}} ({error!r})."
        ) from error
    if "{context}" not in context_template or "{prompt}" not in context_template:
        raise ValueError(f"context_template must hold {{context}} and {{prompt}}, got {context_template!r}.")


def _as_texts(value, name: str) -> List[str]:
    """`text` or `text_target` as a list of valid Unicode strings, refusing other types with a typed error."""
    if isinstance(value, str):
        values = [value]
    elif isinstance(value, (list, tuple)):
        values = list(value)
    else:
        raise InvalidPromptError(f"{name} must be a string or a list of strings, got {type(value).__name__}.")
    for index, item in enumerate(values):
        if not isinstance(item, str):
            raise InvalidPromptError(
                f"{name}[{index}] is {type(item).__name__}, not a string; give one string per row."
            )
        try:
            item.encode("utf-8")
        except UnicodeEncodeError as error:
            raise InvalidPromptError(
                f"{name}[{index}] is not valid Unicode: {error.reason} at character {error.start}. Decode the text "
                "properly (a lone surrogate often comes from reading UTF-16 or bytes with errors='surrogateescape')."
            ) from error
    return values


class VisionAdapterProcessor(ProcessorMixin):
    """Prepares images and prompts for `VisionAdapterForCausalLM`.

    Args:
        image_processor: the vision tower's image processor.
        tokenizer: the LM's tokenizer. `image_token` is added to it as a special token when missing.
        num_image_tokens: placeholders per image (the model config's `num_image_tokens`).
        image_token: the placeholder string users write in prompts.
        use_chat_template: wrap prompts in the chat template (`chat_template`, else the tokenizer's) as one user
            turn, when there is one. Off, prompts and chat messages go to the LM in the plain format.
        image_placement: where the images go in a prompt that holds no placeholder: `"start"` (before the text, the
            usual convention) or `"end"` (after it, so the visual tokens can attend to the question).
        describe_prompt: describe, then answer. When set, the model was trained to answer with a description of the
            image as context: hf_vadapter's generation first asks it this prompt, then puts its answer before every
            other prompt of the same image with `context_template` (see `with_context`). None: prompts go as given.
        context_template: how context goes before a prompt; it has `{context}` and `{prompt}` fields.
    """

    _auto_class = "AutoProcessor"

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        num_image_tokens: int = 1,
        image_token: str = "<image>",
        use_chat_template: bool = True,
        image_placement: str = "start",
        chat_template=None,
        describe_prompt: Optional[str] = None,
        context_template: str = CONTEXT_TEMPLATE,
    ):
        if image_placement not in IMAGE_PLACEMENTS:
            raise ValueError(f"image_placement must be one of {IMAGE_PLACEMENTS}, got {image_placement!r}.")
        _check_context_settings(describe_prompt, context_template, image_token)
        self.describe_prompt = describe_prompt
        self.context_template = context_template
        self.num_image_tokens = num_image_tokens
        self.image_token = image_token
        self.use_chat_template = use_chat_template
        self.image_placement = image_placement
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        self.image_token_id = ensure_image_token(self.tokenizer, image_token)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # Left padding: the last position of every row is its real last token, as generation needs.
        self.tokenizer.padding_side = "left"

    @classmethod
    def from_vision_text_pretrained(cls, vision_name_or_path, text_name_or_path, num_image_tokens: int, **kwargs):
        """Build from the two base checkpoints (Hub ids or folders)."""
        vision_revision, text_revision = kwargs.pop("vision_revision", None), kwargs.pop("text_revision", None)
        image_size = kwargs.pop("image_size", None)
        image_processor = load_image_processor(vision_name_or_path, vision_revision)
        if image_size is not None:
            image_processor = resize_image_processor(image_processor, image_size)
        tokenizer = AutoTokenizer.from_pretrained(text_name_or_path, revision=text_revision)
        return cls(image_processor, tokenizer, num_image_tokens=num_image_tokens, **kwargs)

    @classmethod
    def for_model(cls, model, **kwargs) -> "VisionAdapterProcessor":
        """The processor matching a `VisionAdapterForCausalLM` built from named bases.

        Construction runs one way: the bases' own preprocessors (`base_preprocessors.py`) give the model its
        `image_size` and `image_token_id`, the adapter fixes `num_image_tokens` in the model config, and the processor
        is built from that config. The model never reads the processor. An adapter that reads the text before each
        image (`reads_prompt`, e.g. MLP focus tokens) gets the images after the prompt unless `image_placement` says
        otherwise."""
        config = model.config
        if getattr(model.adapter, "reads_prompt", False):
            kwargs.setdefault("image_placement", "end")
        return cls.from_vision_text_pretrained(
            config.vision_model_name_or_path,
            config.text_model_name_or_path,
            num_image_tokens=config.num_image_tokens,
            image_token=config.image_token,
            vision_revision=config.vision_revision,
            text_revision=config.text_revision,
            image_size=config.image_size,
            **kwargs,
        )

    # ------------------------------------------------------------------------------------------ text

    def lm_chat_template(self) -> Optional[str]:
        """The template prompts are wrapped in when `use_chat_template` is on: the processor's own `chat_template`,
        else the tokenizer's. None means prompts go to the LM as plain text."""
        if not self.use_chat_template:
            return None
        return self.chat_template or getattr(self.tokenizer, "chat_template", None) or None

    def format_prompt(self, prompt: str) -> str:
        """The prompt as the LM expects it: one user turn of its chat template, or the plain text. A prompt already
        rendered with the template (by `apply_chat_template`) is returned as it is."""
        template = self.lm_chat_template()
        if template is None or is_templated(prompt, self._template_markers(template)):
            return prompt
        messages = [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=True
        )

    def _template_markers(self, template: str) -> Tuple[str, str, str]:
        cached = getattr(self, "_markers_cache", None)
        if cached is None or cached[0] != template:
            render = lambda messages, generation: self.tokenizer.apply_chat_template(  # noqa: E731
                messages, chat_template=template, tokenize=False, add_generation_prompt=generation
            )
            self._markers_cache = (template, template_markers(template, render))
        return self._markers_cache[1]

    def apply_chat_template(self, conversation, chat_template: Optional[str] = None, **kwargs):
        """Render chat messages, as transformers' multimodal processors do; with `tokenize=True, return_dict=True`
        the result holds `input_ids`, `attention_mask` and `pixel_values`, ready for `model.generate(**inputs)`.

        Content lists are rendered with `image_token` where each `{"type": "image"}` block stands; images given in
        the blocks (PIL image, local path, `"path"` or `"url"` keys) become `pixel_values`. The template is
        `chat_template`, else `lm_chat_template()`, else `PLAIN_CHAT_TEMPLATE` (turns one per line; one user turn
        renders as its bare text).
        """
        conversations, is_batched = self._normalize_conversations(conversation)
        flat, images = flatten_conversations(conversations, self.image_token)
        processor_kwargs = dict(kwargs.pop("processor_kwargs", None) or {})
        if any(images) and "images" not in processor_kwargs:
            processor_kwargs["images"] = images if is_batched else images[0]
        template = chat_template or self.lm_chat_template() or PLAIN_CHAT_TEMPLATE
        return super().apply_chat_template(
            flat if is_batched else flat[0], chat_template=template, processor_kwargs=processor_kwargs, **kwargs
        )

    def with_context(self, prompt: str, context: str) -> str:
        """`prompt` with `context` (text about its image) before it, by `context_template`; empty context adds
        nothing. With `describe_prompt` set, the context the model was trained with is its description of the image:

            description = generate(processor(images=image, text=processor.describe_prompt))
            inputs = processor(images=image, text=processor.with_context(question, description))
        """
        context = context.strip()
        return self.context_template.format(context=context, prompt=prompt) if context else prompt

    def is_describe_prompt(self, prompt: str) -> bool:
        """Whether `prompt` asks for the description itself (which then gets no context)."""
        return self.describe_prompt is not None and prompt.strip().lower() == self.describe_prompt.strip().lower()

    def with_placeholders(self, prompt: str, num_images: int) -> str:
        """The prompt with `num_images` placeholders at `image_placement`, unless it already holds some."""
        if num_images == 0 or self.image_token in prompt:
            return prompt
        placeholders = self.image_token * num_images
        return f"{prompt}\n{placeholders}" if self.image_placement == "end" else f"{placeholders}\n{prompt}"

    def _prompt_ids(self, prompt: str, num_images: Optional[int]) -> List[int]:
        """Token ids with every placeholder expanded. `num_images=None` (features come from a cache) skips the
        count check here; the model checks placeholders against the visual tokens it receives."""
        count = prompt.count(self.image_token)
        if count == 0 and num_images:
            prompt = self.with_placeholders(prompt, num_images)
        elif num_images is not None and count != num_images:
            raise ImageTokenMismatchError(
                f"The prompt {prompt[:60]!r} holds {count} `{self.image_token}` placeholders but {num_images} images "
                "were given for it. Write one placeholder per image (or none, to put the images first)."
            )
        text = self.format_prompt(prompt)
        # A templated prompt carries the special tokens its template writes (as tokenizers' apply_chat_template).
        add_special = self.lm_chat_template() is None
        ids = self.tokenizer(text, add_special_tokens=add_special)["input_ids"]
        expanded: List[int] = []
        for token_id in ids:
            expanded.extend([token_id] * (self.num_image_tokens if token_id == self.image_token_id else 1))
        return expanded

    def _target_ids(self, target: str) -> List[int]:
        ids = self.tokenizer(target, add_special_tokens=False)["input_ids"]
        return ids + [self.tokenizer.eos_token_id]

    def _truncate(self, prompt_ids: List[int], target_ids: List[int], max_length: int) -> Tuple[List[int], List[int]]:
        """Drop text tokens only: the end of the target first, then the prompt's earliest text tokens."""
        overflow = len(prompt_ids) + len(target_ids) - max_length
        if overflow <= 0:
            return prompt_ids, target_ids
        num_placeholders = sum(token == self.image_token_id for token in prompt_ids)
        if num_placeholders + 1 > max_length:
            raise InvalidPromptError(
                f"max_length={max_length} cannot hold the {num_placeholders} image placeholders plus any text."
            )
        logger.warning(f"Sequence is {overflow} tokens over max_length={max_length}: dropping text, never images.")
        cut = min(overflow, max(len(target_ids) - 1, 0))
        target_ids = target_ids[: len(target_ids) - cut]
        overflow -= cut
        kept = list(prompt_ids)
        index = 1 if kept and kept[0] == self.tokenizer.bos_token_id else 0
        while overflow > 0 and index < len(kept):
            if kept[index] == self.image_token_id:
                index += 1
                continue
            del kept[index]
            overflow -= 1
        return kept, target_ids

    # ------------------------------------------------------------------------------------------ call

    def __call__(
        self,
        images=None,
        text: Union[str, Sequence[str], None] = None,
        text_target: Union[str, Sequence[str], None] = None,
        videos=None,
        max_length: Optional[int] = None,
        return_tensors: str = "pt",
        **kwargs,
    ) -> BatchFeature:
        """Tokenize prompts (and targets), expand placeholders, and preprocess images or videos.

        Args:
            images: one image, one per prompt, or a list of images per prompt.
            text: the prompts; `<image>` marks where each image goes (images go first when a prompt has none).
            text_target: the texts to supervise (training). Labels are -100 everywhere else.
            videos: one list of frames per prompt, each counted as one `<image>`; gives pixel_values [B, T, C, H, W].
            max_length: the longest sequence to return; text beyond it is dropped, never placeholders.
        """
        if text is None:
            raise InvalidPromptError("text is required: pass a prompt (it may be just '<image>').")
        prompts = _as_texts(text, "text")
        targets = None if text_target is None else _as_texts(text_target, "text_target")
        if targets is not None and len(targets) != len(prompts):
            raise InvalidPromptError(f"Got {len(prompts)} prompts but {len(targets)} targets.")
        for index, target in enumerate(targets or []):
            if self.image_token in target:
                raise InvalidPromptError(
                    f"text_target[{index}] holds the image placeholder {self.image_token!r}: targets are the text the "
                    "model learns to write, and images go in the prompt only. Remove it from the target."
                )
        if images is not None and videos is not None:
            raise InvalidImageError("Pass images or videos, not both.")
        per_sample = self._group_visuals(images, videos, len(prompts))

        rows = []
        for index, prompt in enumerate(prompts):
            if not prompt.strip() and not per_sample[index] and self.image_token not in prompt:
                raise InvalidPromptError(f"Prompt {index} is empty and has no image.")
            prompt_ids = self._prompt_ids(prompt, None if images is None and videos is None else len(per_sample[index]))
            target_ids = self._target_ids(targets[index]) if targets is not None else []
            if max_length is not None:
                prompt_ids, target_ids = self._truncate(prompt_ids, target_ids, max_length)
            rows.append((prompt_ids, target_ids))

        data = self._pad(rows, with_labels=targets is not None)
        flat = [visual for sample in per_sample for visual in sample]
        if flat:
            data["pixel_values"] = self._pixel_values(flat, is_video=videos is not None)
        return BatchFeature(data=data, tensor_type=return_tensors)

    @staticmethod
    def _group_visuals(images, videos, batch_size: int) -> List[list]:
        """Images or videos per prompt, in placeholder order."""
        if images is None and videos is None:
            return [[] for _ in range(batch_size)]
        if videos is not None:
            if len(videos) != batch_size:
                raise ImageTokenMismatchError(f"Got {batch_size} prompts but {len(videos)} videos; give one per prompt.")
            return [[list(video)] for video in videos]
        if isinstance(images, Image.Image):
            images = [images]
        images = list(images)
        if batch_size == 1 and images and not isinstance(images[0], (list, tuple)):
            return [images]
        if len(images) != batch_size:
            raise ImageTokenMismatchError(
                f"Got {batch_size} prompts but {len(images)} image entries; give one image (or a list of images) per "
                "prompt."
            )
        return [list(entry) if isinstance(entry, (list, tuple)) else [entry] for entry in images]

    def _pixel_values(self, visuals: list, is_video: bool) -> torch.Tensor:
        if not is_video:
            return self.image_processor([to_rgb(image) for image in visuals], return_tensors="pt")["pixel_values"]
        lengths = {len(frames) for frames in visuals}
        if len(lengths) != 1:
            raise InvalidImageError(f"All videos in a batch need the same number of frames, got {sorted(lengths)}.")
        frames = [to_rgb(frame) for video in visuals for frame in video]
        pixel_values = self.image_processor(frames, return_tensors="pt")["pixel_values"]  # [B*T, C, H, W]
        return pixel_values.unflatten(0, (len(visuals), -1))  # [B, T, C, H, W]

    def _pad(self, rows: List[Tuple[List[int], List[int]]], with_labels: bool) -> dict:
        longest = max(len(p) + len(t) for p, t in rows)
        pad_id = self.tokenizer.pad_token_id
        input_ids, attention_mask, labels = [], [], []
        for prompt_ids, target_ids in rows:
            ids = prompt_ids + target_ids
            padding = longest - len(ids)
            input_ids.append([pad_id] * padding + ids)
            attention_mask.append([0] * padding + [1] * len(ids))
            labels.append([IGNORE_INDEX] * (padding + len(prompt_ids)) + target_ids)
        data = {"input_ids": input_ids, "attention_mask": attention_mask}
        if with_labels:
            data["labels"] = labels
        return data

    # ------------------------------------------------------------------------------------------ decoding

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)


def resize_image_processor(image_processor, image_size: int):
    """A copy of `image_processor` producing `image_size` x `image_size` images."""
    updates = {"size": {"height": image_size, "width": image_size}}
    if getattr(image_processor, "crop_size", None) is not None:
        updates["crop_size"] = {"height": image_size, "width": image_size}
    return type(image_processor).from_dict({**image_processor.to_dict(), **updates})
