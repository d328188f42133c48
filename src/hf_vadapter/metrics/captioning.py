"""Caption tokenisation and input checks shared by the `cider.py` and `bleu.py` evaluate modules.

Plain Python with no relative imports: `evaluate.load` copies this file next to a metric script that imports it
relatively, and evaluate only copies a script's direct local imports.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# A word: letters and digits, possibly joined by inner apostrophes or hyphens ("don't", "t-shirt").
_WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")


def tokenize_caption(caption: str) -> str:
    """Lower-case a caption and keep its words, space-separated; all other punctuation is dropped.

    A Java-free stand-in for the Stanford PTB tokenizer that the COCO caption evaluation runs before CIDEr (which
    also lower-cases and drops punctuation). It differs from PTB in keeping contractions and possessives whole
    (``"dog's"`` rather than ``"dog 's"``) and in splitting numbers at their separators (``"2.5"`` -> ``"2 5"``),
    so scores are close to, not identical with, COCO leaderboard numbers.

    >>> tokenize_caption("A dog's T-shirt, on the grass!")
    "a dog's t-shirt on the grass"
    """
    return " ".join(_WORD.findall(caption.lower()))


def check_caption_inputs(metric: str, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    """Raise ValueError unless there is at least one prediction and every prediction has a reference.

    Only what evaluate leaves unchecked: it already rejects lists of different lengths and strings as references.
    """
    if not predictions:
        raise ValueError(f"{metric} needs at least one prediction.")
    for index, captions in enumerate(references):
        if not captions:
            raise ValueError(f"{metric}: prediction {index} ({predictions[index]!r}) has no reference captions.")
