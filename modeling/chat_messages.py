"""Chat messages with images, as transformers' multimodal processors take them, turned into what the LM's template reads.

A message's `content` may be a string or a list of blocks: `{"type": "text", "text": ...}` and `{"type": "image"}`,
the image optionally given in the block as a PIL image, a local path or a URL (keys `image`, `path`, `url`,
`base64`). Content lists are flattened to strings with the processor's `<image>` placeholder where each image block
stands, so any LM chat template (written for string content) renders them, and the images are collected in order.

An LM without a chat template gets `PLAIN_CHAT_TEMPLATE`: the turns' contents one per line, each assistant turn
closed by the end-of-sequence token, and nothing added for the generation prompt. A single user turn thus renders
as its bare text, exactly what the processor feeds such an LM for a plain prompt.
"""

import os
from pathlib import Path
from typing import List, Tuple

from PIL import Image, UnidentifiedImageError

from .errors import InvalidImageError, InvalidPromptError

PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if not loop.first %}{{ '\\n' }}{% endif %}{{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
)
IMAGE_SOURCE_KEYS = ("image", "path", "url", "base64")
URL_PREFIXES = ("http://", "https://")
_SENTINEL = "\x00hf_vadapter_prompt\x00"


def flatten_conversations(conversations: List[list], image_token: str) -> Tuple[List[list], List[list]]:
    """(conversations with string contents, images per conversation in placeholder order) from normalized
    conversations; the user's message dicts are left untouched."""
    flat_conversations, images = [], []
    for conversation in conversations:
        flat, found = [], []
        for message in conversation:
            content = message.get("content")
            if isinstance(content, (list, tuple)):
                content = _flatten_content(content, image_token, found)
            flat.append({**message, "content": content})
        flat_conversations.append(flat)
        images.append(found)
    return flat_conversations, images


def _flatten_content(blocks, image_token: str, images: list) -> str:
    """Blocks joined as the processor joins images and a prompt: a newline between text and image, none between
    consecutive images."""
    text, previous = "", None
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            piece = block.get("text", "")
        elif kind == "image":
            piece = image_token
            source = next((block[key] for key in IMAGE_SOURCE_KEYS if block.get(key) is not None), None)
            if source is not None:
                images.append(load_message_image(source))
        else:
            raise InvalidPromptError(
                f"Unsupported content block {block!r}: this processor reads {{'type': 'text', 'text': ...}} and "
                "{'type': 'image'} blocks (the image given under 'image', 'path', 'url' or 'base64', or passed "
                "separately)."
            )
        if previous is not None and not (previous == kind == "image"):
            text += "\n"
        text, previous = text + piece, kind
    return text


def load_message_image(source) -> Image.Image:
    """A PIL image from what a chat message holds: a PIL image, a local path, a URL or base64 data."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, Path):
        source = str(source)
    if not isinstance(source, str):
        raise InvalidImageError(
            f"An image block holds a {type(source).__name__}; give a PIL image, a local path or a URL."
        )
    if source.startswith(URL_PREFIXES):
        return _load_url(source)
    if os.path.isfile(source):
        try:
            image = Image.open(source)
            image.load()
        except (OSError, UnidentifiedImageError) as error:
            raise InvalidImageError(f"Cannot read the image file {source!r}: {error}") from error
        return image
    if source.startswith("data:image/") or len(source) > 256:
        return _load_with_transformers(source, "base64 image data")
    raise InvalidImageError(f"The image {source!r} is neither a file nor a URL: no such file.")


def _load_url(url: str) -> Image.Image:
    if _offline():
        raise InvalidImageError(
            f"The image {url!r} is a URL, but this session is offline (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is "
            "set). Download it and pass a local path or a PIL image instead."
        )
    return _load_with_transformers(url, "URL")


def _load_with_transformers(source: str, what: str) -> Image.Image:
    from transformers.image_utils import load_image

    try:
        return load_image(source, timeout=30)
    except Exception as error:  # network, HTTP and decoding errors all mean the same thing to the caller
        raise InvalidImageError(
            f"Cannot load the image from the {what} {source[:80]!r}: {error}. Pass a local path or a PIL image."
        ) from error


def _offline() -> bool:
    flags = (os.environ.get(name, "").upper() for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flag in ("1", "ON", "YES", "TRUE") for flag in flags)


def template_markers(chat_template: str, render) -> Tuple[str, str, str]:
    """(turn opening, end of a user turn, generation prompt) of `chat_template`, each stripped of surrounding
    whitespace: the text `render(messages, add_generation_prompt)` puts before and after one user turn."""
    messages = [{"role": "user", "content": _SENTINEL}]
    try:
        head, turn_end = render(messages, False).split(_SENTINEL, 1)
        _, with_generation_prompt = render(messages, True).split(_SENTINEL, 1)
    except Exception:  # a template that refuses a lone user turn, or rewrites its content: nothing to recognise
        return "", "", ""
    return head.strip(), turn_end.strip(), with_generation_prompt.strip()


def is_templated(prompt: str, markers: Tuple[str, str, str]) -> bool:
    """Whether `prompt` was already rendered with the chat template whose `template_markers` are given: it opens
    like a rendered conversation, or ends like a rendered user turn (with or without the generation prompt)."""
    head, turn_end, generation_prompt = markers
    text = prompt.strip()
    checks = ((head, text.startswith), (turn_end, text.endswith), (generation_prompt, text.endswith))
    return any(marker and check(marker) for marker, check in checks)
