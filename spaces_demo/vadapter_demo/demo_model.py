"""The loaded checkpoint (or why there is none), its description, and the two handlers the buttons call."""

from __future__ import annotations

import logging
import os
import threading
from typing import Iterator, Optional, Tuple

from .checkpoint import RemoteCode, load_model, looks_like_repo_id, resolve_checkpoint, shows_expert_context
from .inputs import checked_context, checked_prompt, generation_kwargs, read_image, text, with_expert_context
from .metrics_table import find_metrics, metrics_markdown
from .settings import CAPTION_PROMPT, DEFAULT_MAX_NEW_TOKENS, HOWTO, NO_MODEL, WARNING, FriendlyError
from .streaming import stream_answer

logger = logging.getLogger("hf_vadapter.spaces_demo")


class DemoModel:
    """The loaded checkpoint (or why there is none) and the two handlers the buttons call."""

    def __init__(self, checkpoint: Optional[str], source: str = "", model=None, processor=None, error: str = ""):
        self.checkpoint, self.source = checkpoint, source
        self.model, self.processor, self.error = model, processor, error
        self.remote = RemoteCode.of(model, processor) if model is not None else None
        # Shown to the user as they are: input problems, and the checkpoint's typed errors (e.g. InvalidImageError).
        self._user_errors = (FriendlyError, *(self.remote.errors if self.remote else ()))
        self._model_lock = threading.Lock()  # adapters keep per-forward state on shared hooks: one generate at a time
        self._stats_lock = threading.Lock()
        self.stats = {"requests": 0, "active": 0, "peak_active": 0, "generating": 0, "peak_generating": 0}

    @classmethod
    def load(cls, checkpoint: Optional[str] = None, device: Optional[str] = None) -> "DemoModel":
        """Load the resolved checkpoint; any failure is kept as a message instead of raised."""
        path, source = resolve_checkpoint(checkpoint)
        if path is None:
            return cls(None, source, error="")
        if not os.path.exists(path) and not looks_like_repo_id(path):
            return cls(path, source, error=f"`{path}` does not exist.")
        try:
            model, processor = load_model(path, device=device)
            return cls(path, source, model=model, processor=processor)
        except Exception as error:  # noqa: BLE001 - the app must start and explain, whatever went wrong
            logger.exception("Could not load the checkpoint %s", path)
            return cls(path, source, error=f"Loading `{path}` failed: {type(error).__name__}: {error}")

    # -------------------------------------------------------------------------------------- description

    @property
    def ready(self) -> bool:
        return self.model is not None

    @property
    def adapter_type(self) -> Optional[str]:
        return self.model.config.adapter.adapter_type if self.ready else None

    @property
    def uses_expert_context(self) -> bool:
        """Whether the page shows the expert-context box (see `checkpoint.shows_expert_context`)."""
        return self.ready and shows_expert_context(self.model)

    def howto_markdown(self) -> str:
        if self.ready:
            return ""
        reason = ""
        if self.error:
            reason = f"The checkpoint from {self.source} could not be used: {self.error}\n\n"
        return reason + HOWTO

    def info_markdown(self) -> str:
        """Backbones, adapter, trainable parameters and the checkpoint's metrics, as Markdown."""
        if not self.ready:
            return "No checkpoint is loaded: see the top of the page for how to get one."
        config = self.model.config
        trainable, total = self.model.get_nb_trainable_parameters()
        rows = [
            ("Checkpoint", f"`{self.checkpoint}` (from {self.source})"),
            ("Vision tower", f"`{config.vision_model_name_or_path}` ({config.vision_config.model_type})"),
            ("Language model", f"`{config.text_model_name_or_path}` ({config.text_config.model_type})"),
            ("Adapter", f"`{self.adapter_type}`"),
            ("Visual tokens per image", str(config.num_image_tokens)),
            ("Image size", f"{config.image_size} px"),
            ("Trainable parameters", f"{trainable:,d} of {total:,d} ({100 * trainable / max(total, 1):.3f}%)"),
        ]
        table = [f"- **{name}:** {value}" for name, value in rows]
        return "\n".join(table) + "\n\n" + metrics_markdown(find_metrics(self.checkpoint))

    # -------------------------------------------------------------------------------------- handlers

    def caption(self, image, max_new_tokens=DEFAULT_MAX_NEW_TOKENS, decoding="greedy", num_beams=3,
                temperature=0.7, expert_context="") -> Iterator[Tuple[str, str]]:
        """Describe the image. Yields (text so far, status) while generating; the last pair is the answer."""
        yield from self._respond(image, CAPTION_PROMPT, max_new_tokens, decoding, num_beams, temperature,
                                 expert_context)

    def answer(self, image, question, max_new_tokens=DEFAULT_MAX_NEW_TOKENS, decoding="greedy", num_beams=3,
               temperature=0.7, expert_context="") -> Iterator[Tuple[str, str]]:
        """Answer a question about the image. Yields (text so far, status); the last pair is the answer."""
        yield from self._respond(image, text(question), max_new_tokens, decoding, num_beams, temperature,
                                 expert_context, is_question=True)

    def _respond(self, image, prompt, max_new_tokens, decoding, num_beams, temperature, expert_context,
                 is_question=False) -> Iterator[Tuple[str, str]]:
        self._count("active", +1)
        try:
            if not self.ready:
                yield WARNING + NO_MODEL, ""
                return
            prompt = checked_prompt(prompt, is_question)
            context = checked_context(text(expert_context))
            settings = generation_kwargs(max_new_tokens, decoding, num_beams, temperature)
            rgb, notes = read_image(image, self.remote)
            describe = getattr(self.processor, "describe_prompt", None)
            if is_question and describe:  # trained to describe, then answer: the description becomes context
                description = ""
                for description, _ in stream_answer(self.model, self.processor, rgb, describe, settings, "",
                                                    self._model_lock, self._count):
                    yield "", f"Describing the image first: {description}"
                context = " ".join(part for part in (description, context) if part)
                notes.append(f"Described as: {description!r}.")
            yield from stream_answer(self.model, self.processor, rgb,
                                     with_expert_context(prompt, context, self.processor), settings,
                                     " ".join(notes), self._model_lock, self._count)
        except self._user_errors as error:
            yield WARNING + str(error), "Nothing was generated."
        except Exception as error:  # noqa: BLE001 - never show a traceback to the user
            logger.exception("Generation failed")
            yield (WARNING + f"Something went wrong while generating ({type(error).__name__}). The details are in "
                   "the server log."), "Nothing was generated."
        finally:
            self._count("active", -1)

    def _count(self, key: str, delta: int) -> None:
        with self._stats_lock:
            self.stats[key] += delta
            peak = "peak_" + key
            self.stats[peak] = max(self.stats[peak], self.stats[key])
            if key == "active" and delta > 0:
                self.stats["requests"] += 1
