"""Score generated answers with the shipped metric modules: CIDEr and BLEU for captions, VQAv2 accuracy for VQA.

CIDEr is computed over the whole caption set at once (its n-gram weights come from the set). VQA accuracy is reported
overall and per question type. Rows of other tasks (text-only instructions) are not scored.
"""

import functools
import re
from typing import Any, Dict, List, Sequence

from ..data.schema import exact_answer_references
from ..metrics import load_metric

CAPTION_TASK, VQA_TASK = "caption", "vqa"


@functools.lru_cache(maxsize=None)
def _metric(name: str):
    # In memory: no cache files, so several processes (distributed evaluation) never share one.
    return load_metric(name, keep_in_memory=True)


def metric_name(text: str) -> str:
    """A question type as a metric-name suffix: lower case, runs of other characters as one underscore."""
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_") or "other"


def _vqa_references(references: Sequence[str]) -> List[str]:
    # VQAv2 accuracy wants several annotators' answers: one exact answer counts as agreed by all ten.
    return exact_answer_references(references[0]) if len(references) == 1 else list(references)


def score_predictions(rows: Sequence[Dict[str, Any]], predictions: Sequence[str]) -> Dict[str, float]:
    """Metrics of `predictions` against the rows' references, as a flat dict of floats.

    Keys: `cider`, `bleu` (BLEU-4), `bleu_1`..`bleu_4` (0-100) and `num_captions` for caption rows;
    `vqa_accuracy` (0-1), `vqa_accuracy_<question type>` and `num_questions` for VQA rows.
    """
    if len(rows) != len(predictions):
        raise ValueError(f"Got {len(predictions)} predictions for {len(rows)} rows.")
    metrics: Dict[str, float] = {}
    captions = [(row, prediction) for row, prediction in zip(rows, predictions) if row["task"] == CAPTION_TASK]
    if captions:
        predicted = [prediction for _, prediction in captions]
        references = [list(row["references"]) for row, _ in captions]
        metrics["cider"] = float(_metric("cider").compute(predictions=predicted, references=references)["cider"])
        bleu = _metric("bleu").compute(predictions=predicted, references=references)
        metrics.update({key: float(value) for key, value in bleu.items() if key.startswith("bleu")})
        metrics["num_captions"] = float(len(captions))
    questions = [(row, prediction) for row, prediction in zip(rows, predictions) if row["task"] == VQA_TASK]
    if questions:
        report = _metric("vqa_accuracy").compute(
            predictions=[prediction for _, prediction in questions],
            references=[_vqa_references(row["references"]) for row, _ in questions],
            question_types=[row["question_type"] for row, _ in questions],
        )
        metrics["vqa_accuracy"] = float(report["accuracy"])
        for question_type, value in sorted(report.get("per_question_type", {}).items()):
            metrics[f"vqa_accuracy_{metric_name(question_type)}"] = float(value)
        metrics["num_questions"] = float(len(questions))
    return metrics


def scored_rows(dataset) -> List[int]:
    """Indices of the rows that can be scored (captions and VQA; not text-only instructions)."""
    return [index for index, task in enumerate(dataset["task"]) if task in (CAPTION_TASK, VQA_TASK)]
