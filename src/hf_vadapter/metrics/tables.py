"""The one formatter of evaluation metrics per split and question type (report, quickstart, model card, demo).

It imports only the standard library, so a front end without hf_vadapter (the Space) can also take a copy of it.
"""

import math
from typing import Any, Dict, List, Mapping

ACCURACY_PREFIX = "vqa_accuracy"
CAPTION_METRICS = (("cider", "caption CIDEr"), ("bleu", "caption BLEU-4"))


def metrics_by_split(data: Mapping[str, Any]) -> Dict[str, Dict[str, float]]:
    """{split: {metric: number}} from a metrics file: the quickstart's summary (`{"metrics": {split: {...}}}`),
    `hf-vadapter evaluate`'s flat `{metric: number}` (as split "eval"), or an already nested dict."""
    data = data.get("metrics", data) if isinstance(data.get("metrics"), dict) else data
    splits = {name: values for name, values in data.items() if isinstance(values, dict)}
    if not splits:
        splits = {"eval": dict(data)}
    return {name: {k: float(v) for k, v in values.items() if _is_number(v)} for name, values in splits.items()}


def accuracy_table(metrics: Mapping[str, Mapping[str, float]]) -> List[str]:
    """Markdown lines: VQA accuracy overall and per question type, then caption CIDEr and BLEU-4, a column per split."""
    splits = list(metrics)
    keys = sorted({key for values in metrics.values() for key in values if key.startswith(ACCURACY_PREFIX)})
    lines = ["| metric | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for key in keys:
        lines.append(f"| VQA accuracy, {question_type(key)} | " + " | ".join(
            _percent(metrics[split].get(key)) for split in splits) + " |")  # fmt: skip
    for key, name in CAPTION_METRICS:
        if any(key in metrics[split] for split in splits):
            lines.append(f"| {name} | " + " | ".join(_plain(metrics[split].get(key)) for split in splits) + " |")
    return lines


def headline(split: str, values: Mapping[str, float]) -> str:
    """One line per split: VQA accuracy per question type and the caption scores."""
    parts = [f"{question_type(key)} {_percent(value, digits=0)}" for key, value in sorted(values.items())
             if key.startswith(ACCURACY_PREFIX + "_")]  # fmt: skip
    caption = ", ".join(f"{name.split()[-1]} {_plain(values.get(key))}" for key, name in CAPTION_METRICS)
    return f"{split}: VQA {', '.join(parts)} | captions {caption}"


def question_type(key: str) -> str:
    """`vqa_accuracy_colour` -> "colour"; `vqa_accuracy` -> "all"."""
    return key[len(ACCURACY_PREFIX) + 1 :] or "all"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _percent(value, digits: int = 1) -> str:
    return "" if value is None else f"{100 * value:.{digits}f}%"


def _plain(value) -> str:
    return "" if value is None else f"{value:.2f}"
