"""Which checkpoint the demo shows, and loading it through the Auto classes with the code it ships.

A saved adapter holds its own modeling code (`auto_map` in its config.json), so `trust_remote_code=True` loads it
without hf_vadapter installed. The few things the demo needs from that code (the processor's image conversion and
pixel limit, the typed errors) are read from the modules the loaded classes came from.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Tuple

from transformers import AutoModelForCausalLM, AutoProcessor
from transformers.utils import cached_file

from . import settings


def resolve_checkpoint(checkpoint: Optional[str] = None) -> Tuple[Optional[str], str]:
    """(the checkpoint to load or None, where it came from): the argument, the environment, else the default."""
    if checkpoint:
        return str(checkpoint), "--checkpoint"
    if os.environ.get(settings.CHECKPOINT_ENV):
        return os.environ[settings.CHECKPOINT_ENV], settings.CHECKPOINT_ENV
    for base in (Path.cwd(), settings.REPO_ROOT):
        candidate = base / settings.DEFAULT_CHECKPOINT
        if candidate.is_dir():
            return str(candidate), "default"
    return None, "default"


def looks_like_repo_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~")) and "\\" not in name


def checkpoint_file(checkpoint: str, name: str) -> Optional[str]:
    """The local path of file `name` of a checkpoint folder or Hub repo, or None when it has none."""
    if os.path.isdir(checkpoint):
        path = os.path.join(checkpoint, name)
        return path if os.path.isfile(path) else None
    return cached_file(checkpoint, name, _raise_exceptions_for_missing_entries=False,
                       _raise_exceptions_for_connection_errors=False)


def load_model(checkpoint: str, device: Optional[str] = None):
    """(model, processor) for a local folder or a Hub repo id, full or adapter-only, from the checkpoint's own code.

    The processor saved with the checkpoint is used when there is one; otherwise the checkpoint's processing code
    builds it from the bases the model records.
    """
    model = AutoModelForCausalLM.from_pretrained(checkpoint, trust_remote_code=True)
    if device:
        model.to(device)
    model.eval()
    if checkpoint_file(checkpoint, "processor_config.json"):
        processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
    else:
        processor = sibling_module(model, "processing_vadapter").VisionAdapterProcessor.for_model(model)
    return model, processor


def sibling_module(instance, name: str):
    """Module `name` from the package that defined `instance`'s class: the checkpoint's remote code."""
    package = type(instance).__module__.rpartition(".")[0]
    return importlib.import_module(f"{package}.{name}")


@dataclass(frozen=True)
class RemoteCode:
    """What the demo uses from the checkpoint's code: its image conversion, pixel limit and typed errors."""

    to_rgb: Callable  # PIL image -> RGB image; raises the typed InvalidImageError for empty or oversized images
    max_image_pixels: int
    errors: Tuple[type, ...]  # the base classes of the errors the model and processor raise on purpose

    @classmethod
    def of(cls, model, processor) -> "RemoteCode":
        processing = sys.modules[type(processor).__module__]
        errors = {sibling_module(owner, "errors").VisionAdapterError for owner in (model, processor)}
        return cls(processing.to_rgb, processing.MAX_IMAGE_PIXELS, tuple(errors))


def shows_expert_context(model) -> bool:
    """Whether the page offers the expert-context box for this model (any adapter accepts the context, though).

    The adapter declares it; checkpoints whose remote code predates the declaration get no box.
    """
    return bool(getattr(model.adapter, "shows_expert_context", False))
