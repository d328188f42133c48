"""The example rows of the page, from the images that ship in spaces_demo/examples.

`examples/examples.json` lists each image with its question (or none) and where it comes from. It and the images are
written by `scripts/make_demo_examples.py` from hf_vadapter's built-in data (bundled photos and synthetic scenes), so
the Space needs no data package. Gradio copies the files into its cache when the page is built.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, List

from .settings import DEMO_ROOT

logger = logging.getLogger("hf_vadapter.spaces_demo")

EXAMPLES_DIR = DEMO_ROOT / "examples"
EXAMPLES_INDEX = "examples.json"


def example_inputs(folder: Path = EXAMPLES_DIR) -> Dict[str, List[list]]:
    """{"caption": [[path]], "qa": [[path, question]]} for the images listed in `folder`/examples.json.

    A missing or unreadable index, or a listed image that is missing, only drops examples (with a logged warning).
    """
    try:
        entries = json.loads((folder / EXAMPLES_INDEX).read_text(encoding="utf-8"))["examples"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("No examples: %s", error)
        return {"caption": [], "qa": []}
    caption_rows: List[list] = []
    qa_rows: List[list] = []
    for entry in entries:
        path = folder / entry["file"]
        if not path.is_file():
            logger.warning("Example %s is missing", path)
            continue
        caption_rows.append([str(path)])
        if entry.get("question"):
            qa_rows.append([str(path), entry["question"]])
    return {"caption": caption_rows, "qa": qa_rows}
