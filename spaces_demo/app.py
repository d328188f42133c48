"""Gradio demo of an hf_vadapter checkpoint: captioning and visual question answering, streamed token by token.

    python spaces_demo/app.py [--checkpoint PATH_OR_REPO_ID] [--port N] [--host 0.0.0.0]

The checkpoint (a local folder or a Hub repo id, full or adapter-only) comes from `--checkpoint`, else from the
`HF_VADAPTER_CHECKPOINT` environment variable, else from `DEFAULT_CHECKPOINT`: the folder `bash scripts/quickstart.sh`
writes, looked up in the current directory and then in the repository root. Without a usable checkpoint the app
still starts and says how to get one.

The app makes no outside connection: analytics off, no share tunnel, system fonts only (no web fonts). Uploads are
capped (`MAX_FILE_SIZE`), generation runs through a queue (`CONCURRENCY_LIMIT`, `MAX_QUEUE_SIZE`) and one generation
at a time holds the model. Bad inputs (no image, an empty or unreadable file, an image over the processor's pixel
limit, an empty question) get a short message in the answer box, never a traceback.

The module is importable: `build_demo(...)` returns the Blocks, `launch_demo(...)` starts it with the settings above,
and `DemoModel.caption` / `DemoModel.answer` are the handlers (generators of `(answer, status)` pairs) that the
buttons call. See docs/demo.md.
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no telemetry requests

import argparse
import json
import logging
import math
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import gradio as gr
import gradio.utils
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from hf_vadapter import VisionAdapterError
from hf_vadapter.experts import DEFAULT_TEMPLATE, add_expert_context
from hf_vadapter.modeling.processing_vadapter import MAX_IMAGE_PIXELS, to_rgb

logger = logging.getLogger("hf_vadapter.spaces_demo")

# ------------------------------------------------------------------------------------------------ settings

DEFAULT_CHECKPOINT = "outputs/quickstart/adapter"  # what `bash scripts/quickstart.sh` trains
CHECKPOINT_ENV = "HF_VADAPTER_CHECKPOINT"
REPO_ROOT = Path(__file__).resolve().parent.parent

MAX_FILE_SIZE = "10mb"  # uploads over this are refused by Gradio before they reach the handlers
CONCURRENCY_LIMIT = 2  # events running at once (caption and QA share the group); the model itself runs one at a time
MAX_QUEUE_SIZE = 64  # events waiting beyond this are refused with "queue full"
GENERATION_TIMEOUT_S = 600.0  # a stream that produces nothing for this long is given up

CAPTION_PROMPT = "Describe the image."  # the captioning prompt the built-in data trains on
MAX_QUESTION_CHARS = 500
MAX_CONTEXT_CHARS = 1000
MAX_NEW_TOKENS = 128
DEFAULT_MAX_NEW_TOKENS = 32
MAX_BEAMS = 6
DECODING_MODES = ("greedy", "beam search", "sampling")

# Files whose numbers the info panel shows, in this order of preference, each looked for in the checkpoint folder and
# then in its parent (the first found wins): the quickstart's summary and `hf-vadapter evaluate`'s output
# (metrics.json), then the HF Trainer's `save_metrics` files.
METRICS_FILES = ("metrics.json", "eval_results.json", "all_results.json")
MAX_METRIC_ROWS = 40

PHOTO_EXAMPLES = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle", "china")
NUM_SCENE_EXAMPLES = 4
SCENE_EXAMPLE_SIZE = 224
EXAMPLES_DIR = Path(tempfile.gettempdir()) / "hf_vadapter_demo_examples"

# The one answer for every file path a client names that is not one of its own uploads, whether it exists or not.
NOT_AN_UPLOAD = "That file was not uploaded to this demo; please upload the image again."

WARNING = "⚠️ "  # every friendly message in the answer box starts with this
SYSTEM_FONTS = ("ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif")
MONO_FONTS = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "monospace")
CSS = ".answer textarea { font-size: 1.05rem; }"

HOWTO = f"""**No checkpoint is loaded, so the model cannot answer yet.**

- Train the default adapter: `bash scripts/quickstart.sh` (add `--quick` for the small preset). It writes
  `{DEFAULT_CHECKPOINT}`, which this app loads by default.
- Or point the app at a checkpoint (a local folder or a Hub repo id, full or adapter-only):
  `python spaces_demo/app.py --checkpoint PATH`, or set `{CHECKPOINT_ENV}=PATH`. On a Space, set it as a variable.
"""


NO_MODEL = (
    f"No checkpoint is loaded. Train one with `bash scripts/quickstart.sh`, or start the app with "
    f"`--checkpoint PATH` (or {CHECKPOINT_ENV}=PATH): a local folder or a Hub repo id."
)


def theme() -> gr.themes.Base:
    """The default theme with system fonts only: no Google Fonts (or any web font) request."""
    return gr.themes.Default(font=list(SYSTEM_FONTS), font_mono=list(MONO_FONTS))


class FriendlyError(Exception):
    """A problem with the user's input, shown as is in the answer box."""


# ------------------------------------------------------------------------------------------------ checkpoint


def resolve_checkpoint(checkpoint: Optional[str] = None) -> Tuple[Optional[str], str]:
    """(the checkpoint to load or None, where it came from): the argument, the environment, else the default."""
    if checkpoint:
        return str(checkpoint), "--checkpoint"
    if os.environ.get(CHECKPOINT_ENV):
        return os.environ[CHECKPOINT_ENV], CHECKPOINT_ENV
    for base in (Path.cwd(), REPO_ROOT):
        candidate = base / DEFAULT_CHECKPOINT
        if candidate.is_dir():
            return str(candidate), "default"
    return None, "default"


def _looks_like_repo_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~")) and "\\" not in name


def load_model(checkpoint: Optional[str], device: Optional[str] = None):
    """(model, processor) for a local folder or a Hub repo id; the processor saved with it when there is one."""
    from hf_vadapter.evaluation.runner import load_for_evaluation

    return load_for_evaluation(checkpoint, device=device)


def find_metrics(checkpoint: Optional[str]) -> Optional[Tuple[str, Dict[str, Any]]]:
    """(file, numbers) from the first `METRICS_FILES` entry in the checkpoint folder or its parent, if any."""
    if not checkpoint:
        return None
    folder = Path(checkpoint)
    if folder.is_dir():
        for name in METRICS_FILES:
            for base in (folder, folder.resolve().parent):
                path = base / name
                if path.is_file():
                    try:
                        data = json.loads(path.read_text(encoding="utf-8"))
                    except (OSError, ValueError):
                        continue
                    if isinstance(data, dict):
                        return str(path), data
        return None
    if _looks_like_repo_id(checkpoint):  # a Hub repo: only files in it (its parent is not a thing)
        from transformers.utils import cached_file

        for name in METRICS_FILES:
            try:
                path = cached_file(
                    checkpoint,
                    name,
                    _raise_exceptions_for_missing_entries=False,
                    _raise_exceptions_for_connection_errors=False,
                )
                if path:
                    data = json.loads(Path(path).read_text(encoding="utf-8"))
                    if isinstance(data, dict):
                        return f"{checkpoint}/{name}", data
            except Exception:  # noqa: BLE001 - metrics are optional; a failure just hides them
                continue
    return None


def _number(key: str, value: float) -> str:
    if isinstance(value, bool):
        return str(value)
    if "accuracy" in key and isinstance(value, float) and 0.0 <= value <= 1.0:
        return f"{100 * value:.1f}%"
    if isinstance(value, int):
        return f"{value:,d}"
    return f"{value:.4g}"


def metrics_markdown(found: Optional[Tuple[str, Dict[str, Any]]]) -> str:
    """A table of the numbers in a metrics file: one column per split when they are nested by split."""
    if not found:
        return "No metrics file found next to the checkpoint (" + ", ".join(f"`{n}`" for n in METRICS_FILES) + ")."
    path, data = found
    data = data["metrics"] if isinstance(data.get("metrics"), dict) else data
    is_number = lambda value: isinstance(value, (int, float)) and not isinstance(value, bool)  # noqa: E731
    splits = {key: value for key, value in data.items() if isinstance(value, dict)}
    splits = {key: {k: v for k, v in value.items() if is_number(v)} for key, value in splits.items()}
    splits = {key: value for key, value in splits.items() if value}
    flat = {key: value for key, value in data.items() if is_number(value)}
    lines = [f"Metrics from `{path}`:", ""]
    if splits:
        names = list(splits)
        keys = sorted({key for values in splits.values() for key in values})[:MAX_METRIC_ROWS]
        lines += ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for key in keys:
            cells = [_number(key, splits[name][key]) if key in splits[name] else "" for name in names]
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
        lines.append("")
    if flat:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {key} | {_number(key, value)} |" for key, value in sorted(flat.items())[:MAX_METRIC_ROWS]]
    if not splits and not flat:
        lines.append("(no numbers in it)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ inputs


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


def read_image(image: Any) -> Tuple[Image.Image, List[str]]:
    """An RGB PIL image from an upload (Gradio's file payload or a path), a PIL image or an array, plus notes.

    A `ClientFile` (what the server's events pass) opens only Gradio's own uploads; paths from Python callers are
    opened as given. Nothing is decoded before the size check: empty files, unreadable or truncated files and images
    over the processor's pixel limit (decompression bombs included) raise `FriendlyError` / `InvalidImageError`
    with a message for the user.
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
                f"The image is far over the {MAX_IMAGE_PIXELS:,}-pixel limit; please downscale it first."
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
        rgb = to_rgb(image)  # raises InvalidImageError for empty or oversized images, before decoding any pixel
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


def _text(value: Any) -> str:
    return "" if value is None else str(value)


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


class _Cancelled(StoppingCriteria):
    """Stops generation once the request is gone (the browser tab closed, the client cancelled)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


# ------------------------------------------------------------------------------------------------ the model


class DemoModel:
    """The loaded checkpoint (or why there is none) and the two handlers the buttons call."""

    def __init__(self, checkpoint: Optional[str], source: str = "", model=None, processor=None, error: str = ""):
        self.checkpoint, self.source = checkpoint, source
        self.model, self.processor, self.error = model, processor, error
        self._model_lock = threading.Lock()  # adapters keep per-forward state on shared hooks: one generate at a time
        self._stats_lock = threading.Lock()
        self.stats = {"requests": 0, "active": 0, "peak_active": 0, "generating": 0, "peak_generating": 0}

    @classmethod
    def load(cls, checkpoint: Optional[str] = None, device: Optional[str] = None) -> "DemoModel":
        """Load the resolved checkpoint; any failure is kept as a message instead of raised."""
        path, source = resolve_checkpoint(checkpoint)
        if path is None:
            return cls(None, source, error="")
        if not os.path.exists(path) and not _looks_like_repo_id(path):
            return cls(path, source, error=f"`{path}` does not exist.")
        try:
            model, processor = load_model(path, device=device)
        except Exception as error:  # noqa: BLE001 - the app must start and explain, whatever went wrong
            logger.exception("Could not load the checkpoint %s", path)
            return cls(path, source, error=f"Loading `{path}` failed: {type(error).__name__}: {error}")
        return cls(path, source, model=model, processor=processor)

    # -------------------------------------------------------------------------------------- description

    @property
    def ready(self) -> bool:
        return self.model is not None

    @property
    def adapter_type(self) -> Optional[str]:
        return self.model.config.adapter.adapter_type if self.ready else None

    @property
    def uses_expert_context(self) -> bool:
        """LLaMA-Adapter V2 checkpoints get the expert-context box (any adapter accepts the context, though)."""
        return self.adapter_type == "llama_adapter_v2"

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
        question = _text(question).strip()
        yield from self._respond(image, question, max_new_tokens, decoding, num_beams, temperature, expert_context,
                                 is_question=True)

    def _respond(self, image, prompt, max_new_tokens, decoding, num_beams, temperature, expert_context,
                 is_question=False) -> Iterator[Tuple[str, str]]:
        self._count("active", +1)
        try:
            if not self.ready:
                yield WARNING + NO_MODEL, ""
                return
            if is_question and not prompt:
                raise FriendlyError("Please type a question about the image.")
            if len(prompt) > MAX_QUESTION_CHARS:
                raise FriendlyError(f"The question is {len(prompt):,} characters long; keep it under "
                                    f"{MAX_QUESTION_CHARS}.")
            context = _text(expert_context).strip()
            if len(context) > MAX_CONTEXT_CHARS:
                raise FriendlyError(f"The expert context is {len(context):,} characters long; keep it under "
                                    f"{MAX_CONTEXT_CHARS}.")
            settings = generation_kwargs(max_new_tokens, decoding, num_beams, temperature)
            rgb, notes = read_image(image)
            if context:
                prompt = add_expert_context(prompt, rgb, lambda _image: context, DEFAULT_TEMPLATE)
            yield from self._generate(rgb, prompt, settings, notes)
        except (FriendlyError, VisionAdapterError) as error:
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

    def _generate(self, image: Image.Image, prompt: str, settings: Dict[str, Any],
                  notes: Sequence[str]) -> Iterator[Tuple[str, str]]:
        device = next(self.model.parameters()).device
        inputs = self.processor(images=[image], text=[prompt]).to(device)
        prompt_length = inputs["input_ids"].shape[1]
        streaming = settings["num_beams"] == 1
        streamer = (
            TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True,
                                 timeout=GENERATION_TIMEOUT_S)
            if streaming else None
        )
        cancel = threading.Event()
        result: Dict[str, Any] = {}
        kwargs = dict(
            **inputs,
            **settings,
            use_cache=True,
            pad_token_id=self.processor.tokenizer.pad_token_id,
            stopping_criteria=StoppingCriteriaList([_Cancelled(cancel)]),
        )
        if streamer is not None:
            kwargs["streamer"] = streamer

        def work() -> None:
            try:
                with torch.no_grad():
                    result["ids"] = self.model.generate(**kwargs)
            except BaseException as error:  # noqa: BLE001 - handed to the request's thread
                result["error"] = error
            finally:
                if streamer is not None:
                    streamer.end()

        if not self._model_lock.acquire(blocking=False):
            yield "", "Waiting for the model: another request is generating."
            self._model_lock.acquire()
        worker = threading.Thread(target=work, name="hf_vadapter-demo-generate", daemon=True)
        start = time.perf_counter()
        self._count("generating", +1)
        try:
            worker.start()
            note = " ".join(notes)
            if streamer is not None:
                text = ""
                for piece in streamer:
                    text += piece
                    if piece:
                        yield text.strip(), "Generating…"
            else:
                yield "", "Beam search does not stream: the answer appears when it is done."
            worker.join()
        finally:
            cancel.set()  # a closed request stops the model at its next token
            worker.join()
            self._count("generating", -1)
            self._model_lock.release()
        if "error" in result:
            raise result["error"]
        new_tokens = result["ids"][0, prompt_length:]
        answer = self.processor.decode(new_tokens, skip_special_tokens=True).strip()
        seconds = time.perf_counter() - start
        mode = "beam search" if settings["num_beams"] > 1 else ("sampling" if settings["do_sample"] else "greedy")
        status = f"{len(new_tokens)} new tokens in {seconds:.1f} s ({mode})."
        if not answer:
            status += " The model produced no text."
        yield answer, (note + " " + status).strip()


# ------------------------------------------------------------------------------------------------ examples

_EXAMPLES_CACHE: Dict[str, Dict[str, list]] = {}


def _writable_examples_dir(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="hf_vadapter_demo_examples_"))  # another user's folder: use a fresh one


def example_inputs(folder: Path = EXAMPLES_DIR) -> Dict[str, list]:
    """Example rows written to `folder` once per process: {"caption": [[path]], "qa": [[path, question]]}.

    Real photos from `hf_vadapter.data.photos` (with their first written question) and synthetic scenes from
    `hf_vadapter.data.synthetic` (one question type each). A missing source package only drops its examples.
    Gradio copies the files into its cache when the page is built, and serves them from there.
    """
    key = str(folder)
    if key in _EXAMPLES_CACHE:
        return _EXAMPLES_CACHE[key]
    folder = _writable_examples_dir(folder)
    caption_rows: List[list] = []
    qa_rows: List[list] = []
    sources = []
    try:
        from hf_vadapter.data.photos import build_photo_dataset

        sources.append(("photo", build_photo_dataset(), PHOTO_EXAMPLES))
    except Exception as error:  # noqa: BLE001 - optional packages (scikit-image, scikit-learn, matplotlib)
        logger.warning("No photo examples: %s", error)
    try:
        from hf_vadapter.data.synthetic import build_synthetic_dataset

        scenes = build_synthetic_dataset("test", NUM_SCENE_EXAMPLES, image_size=SCENE_EXAMPLE_SIZE)
        sources.append(("scene", scenes, None))
    except Exception as error:  # noqa: BLE001
        logger.warning("No synthetic examples: %s", error)
    for kind, dataset, wanted in sources:
        rows_by_image: Dict[str, List[dict]] = {}
        for index, row in enumerate(dataset.remove_columns("image")):
            rows_by_image.setdefault(row["image_id"], []).append({**row, "index": index})
        for number, (image_id, rows) in enumerate(rows_by_image.items()):
            name = image_id.removeprefix("photo-")
            if wanted is not None and name not in wanted:
                continue
            path = folder / f"{image_id}.{'jpg' if kind == 'photo' else 'png'}"
            if not path.is_file():
                image = dataset[rows[0]["index"]]["image"]
                partial = path.with_name(f".{os.getpid()}-{path.name}")  # written whole, then renamed into place
                if kind == "photo":
                    image.save(partial, format="JPEG", quality=92)
                else:
                    image.save(partial, format="PNG")
                os.replace(partial, path)
            questions = [row["prompt"] for row in rows if row["task"] == "vqa"]
            caption_rows.append([str(path)])
            if questions:
                qa_rows.append([str(path), questions[number % len(questions) if kind == "scene" else 0]])
    _EXAMPLES_CACHE[key] = {"caption": caption_rows, "qa": qa_rows}
    return _EXAMPLES_CACHE[key]


# ------------------------------------------------------------------------------------------------ the page


def _image_input(elem_id: str) -> gr.Image:
    # image_mode=None keeps the upload as it is: read_image converts every mode itself, with the note it shows.
    return gr.Image(label="Image", type="filepath", image_mode=None, sources=["upload", "clipboard"], height=320,
                    elem_id=elem_id)


def build_demo(
    demo_model: Optional[DemoModel] = None,
    checkpoint: Optional[str] = None,
    concurrency_limit: int = CONCURRENCY_LIMIT,
    max_queue_size: int = MAX_QUEUE_SIZE,
    examples: bool = True,
) -> gr.Blocks:
    """The Blocks app, queued. Pass a loaded `DemoModel`, or a checkpoint to load (default: `resolve_checkpoint`)."""
    if demo_model is None:
        demo_model = DemoModel.load(checkpoint)
    rows = example_inputs() if examples else {"caption": [], "qa": []}
    with gr.Blocks(title="hf_vadapter demo", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            "# hf_vadapter: a vision-language adapter\n"
            "A frozen vision tower and a frozen causal LM, joined by a small trained adapter. Upload an image (or "
            "click an example), then ask for a caption or a question's answer; the text streams in as it is "
            "generated.",
            latex_delimiters=[],
        )
        if not demo_model.ready:
            gr.Markdown(demo_model.howto_markdown(), elem_id="howto", latex_delimiters=[])
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Tabs():
                    with gr.Tab("Caption", id="caption"):
                        with gr.Row():
                            caption_image = _image_input(elem_id="caption-image")
                            with gr.Column():
                                caption_button = gr.Button("Describe the image", variant="primary",
                                                           elem_id="caption-button")
                                caption_text = gr.Textbox(label="Caption", lines=4, interactive=False,
                                                          buttons=["copy"], elem_id="caption-answer",
                                                          elem_classes=["answer"])
                                caption_status = gr.Markdown(label="Status", elem_id="caption-status",
                                                             latex_delimiters=[])
                        if rows["caption"]:
                            gr.Examples(rows["caption"], inputs=[caption_image], examples_per_page=12,
                                        label="Examples: real photos and synthetic scenes", elem_id="caption-examples")
                    with gr.Tab("Visual QA", id="qa"):
                        with gr.Row():
                            qa_image = _image_input(elem_id="qa-image")
                            with gr.Column():
                                question = gr.Textbox(label="Question", lines=2, max_length=MAX_QUESTION_CHARS,
                                                      placeholder="What color is the circle?", elem_id="question")
                                qa_button = gr.Button("Answer", variant="primary", elem_id="qa-button")
                                qa_text = gr.Textbox(label="Answer", lines=3, interactive=False, buttons=["copy"],
                                                     elem_id="qa-answer", elem_classes=["answer"])
                                qa_status = gr.Markdown(label="Status", elem_id="qa-status", latex_delimiters=[])
                        if rows["qa"]:
                            gr.Examples(rows["qa"], inputs=[qa_image, question], examples_per_page=12,
                                        label="Examples: real photos and synthetic scenes", elem_id="qa-examples")
            with gr.Column(scale=2):
                with gr.Accordion("Generation settings", open=True):
                    max_new_tokens = gr.Slider(1, MAX_NEW_TOKENS, value=DEFAULT_MAX_NEW_TOKENS, step=1,
                                               label="Max new tokens")
                    decoding = gr.Radio(list(DECODING_MODES), value="greedy", label="Decoding")
                    num_beams = gr.Slider(2, MAX_BEAMS, value=3, step=1, label="Beams (beam search)")
                    temperature = gr.Slider(0.05, 2.0, value=0.7, step=0.05, label="Temperature (sampling)")
                    expert_context = gr.Textbox(
                        label="Expert context (LLaMA-Adapter V2)", value="", lines=2, max_length=MAX_CONTEXT_CHARS,
                        visible=demo_model.uses_expert_context, elem_id="expert-context",
                        info="Text from another model (a caption, OCR, a list of objects) added to the prompt as "
                             "'Context: ...'.",
                    )
                with gr.Accordion("Model", open=True):
                    gr.Markdown(demo_model.info_markdown(), elem_id="model-info", latex_delimiters=[])
        settings = [max_new_tokens, decoding, num_beams, temperature, expert_context]
        # preprocess=False: handlers get the upload's file payload and open it themselves (read_image), so a
        # decompression bomb or an unreadable file becomes a message instead of a Gradio error.
        common = dict(concurrency_id="generate", concurrency_limit=concurrency_limit, preprocess=False)
        # The events wrap the image payload in ClientFile: only Gradio's own uploads are opened.

        def caption(image, max_new_tokens, decoding, num_beams, temperature, expert_context):
            yield from demo_model.caption(ClientFile(image), max_new_tokens, decoding, num_beams, temperature,
                                          expert_context)

        def answer(image, question, max_new_tokens, decoding, num_beams, temperature, expert_context):
            yield from demo_model.answer(ClientFile(image), question, max_new_tokens, decoding, num_beams,
                                         temperature, expert_context)

        caption_button.click(caption, [caption_image, *settings], [caption_text, caption_status],
                             api_name="caption", **common)
        gr.on([qa_button.click, question.submit], answer, [qa_image, question, *settings],
              [qa_text, qa_status], api_name="answer", **common)
    demo.demo_model = demo_model  # for tests and callers that built the demo from a checkpoint
    return demo.queue(default_concurrency_limit=concurrency_limit, max_size=max_queue_size)


def launch_demo(demo: gr.Blocks, host: Optional[str] = None, port: Optional[int] = None,
                max_file_size: str | int = MAX_FILE_SIZE, **kwargs):
    """Start the server with the demo's settings: no share tunnel, system fonts, capped uploads, no extras.

    `host`/`port` default to GRADIO_SERVER_NAME/GRADIO_SERVER_PORT, else 127.0.0.1:7860 (Spaces sets both).
    Extra keyword arguments go to `Blocks.launch` (for example `prevent_thread_lock=True`).
    """
    options = dict(
        server_name=host,
        server_port=port,
        share=False,
        max_file_size=max_file_size,
        theme=theme(),
        css=CSS,
        footer_links=["api", "settings"],
        run_history=False,
        enable_monitoring=False,
        mcp_server=False,
        ssr_mode=False,
        pwa=False,
    )
    options.update(kwargs)
    return demo.launch(**options)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Gradio demo of an hf_vadapter checkpoint.")
    parser.add_argument("--checkpoint", default=None,
                        help=f"A local folder or Hub repo id (default: ${CHECKPOINT_ENV}, else {DEFAULT_CHECKPOINT}).")
    parser.add_argument("--port", type=int, default=None, help="Port (default: $GRADIO_SERVER_PORT, else 7860).")
    parser.add_argument("--host", default=None, help="Interface (default: $GRADIO_SERVER_NAME, else 127.0.0.1).")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY_LIMIT, help="Requests handled at once.")
    parser.add_argument("--max-file-size", default=MAX_FILE_SIZE, help="Largest upload, e.g. 10mb.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    demo_model = DemoModel.load(args.checkpoint, device="cuda" if torch.cuda.is_available() else None)
    if demo_model.ready:
        logger.info("Loaded %s (%s adapter)", demo_model.checkpoint, demo_model.adapter_type)
    else:
        logger.warning("No checkpoint loaded%s. The app starts and explains how to get one.",
                       f": {demo_model.error}" if demo_model.error else "")
    demo = build_demo(demo_model, concurrency_limit=args.concurrency)
    launch_demo(demo, host=args.host, port=args.port, max_file_size=args.max_file_size)


if __name__ == "__main__":
    main()
