"""Gradio demo of an hf_vadapter checkpoint: captioning and visual question answering, streamed token by token.

    python spaces_demo/app.py [--checkpoint PATH_OR_REPO_ID] [--port N] [--host 0.0.0.0]

The checkpoint (a local folder or a Hub repo id, full or adapter-only) comes from `--checkpoint`, else from the
`HF_VADAPTER_CHECKPOINT` environment variable, else from `DEFAULT_CHECKPOINT`: the folder `bash scripts/quickstart.sh`
writes, looked up in the current directory and then in the repository root. Without a usable checkpoint the app
still starts and says how to get one. The checkpoint is loaded with the Auto classes and its own code
(`trust_remote_code=True`): the demo never imports hf_vadapter, so a Space needs only this folder.

The app makes no outside connection: analytics off, no share tunnel, system fonts only (no web fonts). Uploads are
capped (`MAX_FILE_SIZE`), generation runs through a queue (`CONCURRENCY_LIMIT`, `MAX_QUEUE_SIZE`) and one generation
at a time holds the model. Bad inputs (no image, an empty or unreadable file, an image over the processor's pixel
limit, an empty question) get a short message in the answer box, never a traceback.

This file is the Space's entry point and command line; the parts live in `vadapter_demo/` (see its docstring and
docs/demo.md).
"""

from __future__ import annotations

import argparse
import logging
from typing import Optional, Sequence

import torch

from vadapter_demo.demo_model import DemoModel
from vadapter_demo.layout import build_demo, launch_demo
from vadapter_demo.settings import CHECKPOINT_ENV, CONCURRENCY_LIMIT, DEFAULT_CHECKPOINT, MAX_FILE_SIZE

logger = logging.getLogger("hf_vadapter.spaces_demo")


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
