"""Limits, messages and paths shared by the demo's modules."""

from __future__ import annotations

from pathlib import Path

DEFAULT_CHECKPOINT = "outputs/quickstart/adapter"  # what `bash scripts/quickstart.sh` trains
CHECKPOINT_ENV = "HF_VADAPTER_CHECKPOINT"
DEMO_ROOT = Path(__file__).resolve().parent.parent  # spaces_demo/ (the Space's own root)
REPO_ROOT = DEMO_ROOT.parent  # the hf_vadapter repository, when the demo runs from it

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

# The one answer for every file path a client names that is not one of its own uploads, whether it exists or not.
NOT_AN_UPLOAD = "That file was not uploaded to this demo; please upload the image again."

WARNING = "⚠️ "  # every friendly message in the answer box starts with this

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


class FriendlyError(Exception):
    """A problem with the user's input, shown as is in the answer box."""
