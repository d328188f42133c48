"""Checks on what a user sends: which uploaded files may be opened, the image, the texts and the settings panel.

Every refusal is a `FriendlyError` whose message the answer box shows as is.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import gradio.utils
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .checkpoint import RemoteCode
from .settings import (
    DECODING_MODES,
    MAX_BEAMS,
    MAX_CONTEXT_CHARS,
    MAX_NEW_TOKENS,
    MAX_QUESTION_CHARS,
    NOT_AN_UPLOAD,
    FriendlyError,
)

# How the expert context goes into the prompt: the same template as `hf_vadapter.experts.DEFAULT_TEMPLATE`
# (tests/test_spaces_demo.py checks that they agree), kept here because a Space has no hf_vadapter.
EXPERT_CONTEXT_TEMPLATE = "Context: {context}\n{prompt}"


@dataclass
class ClientFile:
    """An image argument as a client sent it (Gradio's FileData payload, a bare {"path": ...} or a string): the
    events run with preprocess=False, so the payload is not checked by Gradio and only `uploaded_path` opens it."""

    payload: Any


def upload_folder() -> Path:
    """Where Gradio keeps the files it received as uploads (GRADIO_TEMP_DIR, else <tmp>/gradio), symlinks resolved."""
    return Path(os.path.realpath(gradio.utils.get_upload_folder()))


def uploaded_path(payload: Any) -> Optional[Path]:
    """The real path of a file Gradio received as an upload, None for no image, else `FriendlyError(NOT_AN_UPLOAD)`.

    The path is resolved (`..`, symlinks) before it is compared with the upload folder, and nothing outside that
    folder is looked at, so the reply says nothing about which server files exist.
    """
    if isinstance(payload, dict):
        payload = payload.get("path")
    if payload is None or payload == "":
        return None
    if not isinstance(payload, str):
        raise FriendlyError(NOT_AN_UPLOAD)
    real = Path(os.path.realpath(payload))
    root = upload_folder()
    if real == root or root not in real.parents or not real.is_file():
        raise FriendlyError(NOT_AN_UPLOAD)
    return real


def read_image(image: Any, remote: RemoteCode) -> Tuple[Image.Image, List[str]]:
    """An RGB PIL image from an upload (Gradio's file payload or a path), a PIL image or an array, plus notes.

    A `ClientFile` (what the server's events pass) opens only Gradio's own uploads; paths from Python callers are
    opened as given. Nothing is decoded before the size check (the checkpoint's own `to_rgb`): empty files,
    unreadable or truncated files and images over the processor's pixel limit (decompression bombs included) raise
    `FriendlyError` or the checkpoint's typed `InvalidImageError`, with a message for the user.
    """
    if isinstance(image, ClientFile):
        image = uploaded_path(image.payload)
    if isinstance(image, dict):  # a FileData payload from a Python caller
        image = image.get("path")
    if image is None or (isinstance(image, str) and not image):
        raise FriendlyError("Please upload an image (or click one of the examples) first.")
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FriendlyError("The uploaded image could not be found on the server; please upload it again.")
        if path.stat().st_size == 0:
            raise FriendlyError("The uploaded file is empty (0 bytes); please upload an image.")
        try:
            image = Image.open(path)
        except Image.DecompressionBombError:
            raise FriendlyError(
                f"The image is far over the {remote.max_image_pixels:,}-pixel limit; please downscale it first."
            ) from None
        except (UnidentifiedImageError, OSError, ValueError):
            raise FriendlyError("The file could not be read as an image; please upload a PNG, JPEG or WebP.") from None
    elif isinstance(image, np.ndarray):
        try:
            image = Image.fromarray(image)
        except (TypeError, ValueError):
            raise FriendlyError(f"An array of shape {image.shape} is not an image.") from None
    mode = getattr(image, "mode", None)
    try:
        rgb = remote.to_rgb(image)  # raises InvalidImageError for empty or oversized images, before decoding any pixel
        rgb.load()
    except OSError:
        raise FriendlyError(
            "The image file is truncated or damaged: only part of it could be decoded. Please upload the complete "
            "file again."
        ) from None
    try:
        rgb = ImageOps.exif_transpose(rgb)  # phone photos: upright as shown in the browser
    except Exception:  # noqa: BLE001 - a broken EXIF block is not worth refusing the image for
        pass
    notes = []
    if mode in ("1", "L", "I", "I;16", "F"):
        notes.append("The grayscale image was converted to RGB.")
    elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        notes.append("The transparent parts of the image were filled with white.")
    elif mode not in ("RGB", None):
        notes.append(f"The {mode} image was converted to RGB.")
    return rgb, notes


def text(value: Any) -> str:
    """A text box's value, stripped ("" for None)."""
    return "" if value is None else str(value).strip()


def checked_prompt(prompt: str, is_question: bool) -> str:
    if is_question and not prompt:
        raise FriendlyError("Please type a question about the image.")
    if len(prompt) > MAX_QUESTION_CHARS:
        raise FriendlyError(f"The question is {len(prompt):,} characters long; keep it under {MAX_QUESTION_CHARS}.")
    return prompt


def checked_context(context: str) -> str:
    if len(context) > MAX_CONTEXT_CHARS:
        raise FriendlyError(f"The expert context is {len(context):,} characters long; keep it under "
                            f"{MAX_CONTEXT_CHARS}.")
    return context


def with_expert_context(prompt: str, context: str, processor=None) -> str:
    """The prompt with the expert context put in front of it; unchanged without context. A checkpoint's processor
    that has `with_context` (and its own `context_template`) places it; older ones get the library's template."""
    if processor is not None and hasattr(processor, "with_context"):
        return processor.with_context(prompt, context)
    return EXPERT_CONTEXT_TEMPLATE.format(context=context, prompt=prompt) if context else prompt


def generation_kwargs(max_new_tokens: Any, decoding: Any, num_beams: Any, temperature: Any) -> Dict[str, Any]:
    """`generate` keyword arguments from the settings panel, clamped to the panel's ranges."""
    try:
        max_new_tokens = int(max_new_tokens)
        num_beams = int(num_beams)
        temperature = float(temperature)
    except (TypeError, ValueError):
        raise FriendlyError("The generation settings must be numbers.") from None
    if not math.isfinite(temperature):
        raise FriendlyError(f"The temperature must be a number from 0.05 to 2.0, not {temperature}.")
    kwargs: Dict[str, Any] = {"max_new_tokens": min(max(max_new_tokens, 1), MAX_NEW_TOKENS)}
    if decoding == "beam search":
        kwargs.update(do_sample=False, num_beams=min(max(num_beams, 2), MAX_BEAMS))
    elif decoding == "sampling":
        kwargs.update(do_sample=True, num_beams=1, temperature=min(max(temperature, 0.05), 2.0))
    elif decoding in (None, "", "greedy"):
        kwargs.update(do_sample=False, num_beams=1)
    else:
        raise FriendlyError(f"Unknown decoding {decoding!r}; choose one of {', '.join(DECODING_MODES)}.")
    return kwargs
