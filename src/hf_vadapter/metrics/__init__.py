"""Offline `evaluate` metric modules (CIDEr, BLEU, VQA accuracy) shipped inside the package and loaded by path.

Each metric is one evaluate script in this folder (`cider.py`, `bleu.py`, `vqa_accuracy.py`), loaded with
`evaluate.load(<absolute path>)`, which needs no Hub access and works with ``HF_HUB_OFFLINE=1``. evaluate copies a
loaded script into its modules cache (``$HF_MODULES_CACHE``, by default ``$HF_HOME/modules``) together with the
sibling files it imports relatively (``from .vqa_scoring import ...``); those helpers must not import further local
files, since evaluate does not follow imports recursively.

    >>> from hf_vadapter.metrics import load_metric
    >>> load_metric("vqa_accuracy").compute(predictions=["two"], references=[["2"] * 10])
    {'accuracy': 1.0}

`vqa_accuracy_score` is the plain-Python VQA accuracy behind the `vqa_accuracy` module. The caption metrics need
``pycocoevalcap`` (CIDEr) and ``sacrebleu`` (BLEU), imported only when those metrics are loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import evaluate

from .vqa_scoring import normalize_answer, vqa_accuracy_report, vqa_accuracy_score

METRIC_NAMES: tuple[str, ...] = ("bleu", "cider", "vqa_accuracy")

__all__ = [
    "METRIC_NAMES",
    "load_metric",
    "metric_path",
    "normalize_answer",
    "vqa_accuracy_report",
    "vqa_accuracy_score",
]


def metric_path(name: str) -> Path:
    """Absolute path of the evaluate script of a packaged metric.

    Raises:
        ValueError: ``name`` is not one of `METRIC_NAMES`.
    """
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {name!r}; hf_vadapter ships {', '.join(METRIC_NAMES)}.")
    return Path(__file__).resolve().parent / f"{name}.py"


def load_metric(name: str, **load_kwargs: Any) -> evaluate.EvaluationModule:
    """Load a packaged metric by name with `evaluate.load`, offline.

    Args:
        name: one of `METRIC_NAMES`.
        **load_kwargs: passed to `evaluate.load` (``keep_in_memory``, ``num_process``, ``process_id``,
            ``experiment_id``, ``cache_dir``, ...).

    Raises:
        ValueError: ``name`` is not one of `METRIC_NAMES`.
    """
    return evaluate.load(str(metric_path(name)), **load_kwargs)
