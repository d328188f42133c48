"""Evaluate a checkpoint on a data split: load the model, generate, score, write predictions and metrics.

    from hf_vadapter.evaluation.runner import evaluate_model, load_for_evaluation
    model, processor = load_for_evaluation("runs/exp1/checkpoint-500")
    metrics = evaluate_model(model, processor, dataset, output_dir="runs/exp1/eval")

`output_dir` gets `predictions.jsonl` (one line per row: ids, task, question type, prompt, prediction, references)
and `metrics.json`.
"""

import json
import os
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch

from ..modeling.file_resolution import has_checkpoint_file
from ..modeling.modeling_vadapter import VisionAdapterForCausalLM
from ..modeling.processing_vadapter import VisionAdapterProcessor
from .generation import generate_predictions
from .scoring import score_predictions, scored_rows

PREDICTIONS_NAME = "predictions.jsonl"
METRICS_NAME = "metrics.json"


def load_for_evaluation(
    checkpoint: Union[str, os.PathLike],
    vision_model_name_or_path: Optional[str] = None,
    text_model_name_or_path: Optional[str] = None,
    dtype: Optional[torch.dtype] = None,
    device: Optional[str] = None,
) -> Tuple[VisionAdapterForCausalLM, VisionAdapterProcessor]:
    """A model and processor from a full checkpoint or an adapter-only one (a run folder or `checkpoint-N`).

    An adapter-only checkpoint is put on the bases it records, or on the given ones (other copies of the same bases).
    The processor saved with the checkpoint is used when there is one, else it is rebuilt from the bases.
    """
    checkpoint = str(checkpoint)
    if vision_model_name_or_path or text_model_name_or_path:
        model = VisionAdapterForCausalLM.from_adapter_pretrained(
            checkpoint,
            vision_model_name_or_path=vision_model_name_or_path,
            text_model_name_or_path=text_model_name_or_path,
            dtype=dtype,
        )
    else:
        kwargs = {"dtype": dtype} if dtype is not None else {}
        model = VisionAdapterForCausalLM.from_pretrained(checkpoint, **kwargs)
    if device:
        model.to(device)
    model.eval()
    if has_checkpoint_file(checkpoint, "processor_config.json") and not (
        vision_model_name_or_path or text_model_name_or_path
    ):
        processor = VisionAdapterProcessor.from_pretrained(checkpoint)
    else:
        processor = VisionAdapterProcessor.for_model(model)
    return model, processor


def _jsonable(value):
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def evaluate_model(
    model,
    processor,
    dataset,
    output_dir: Union[str, os.PathLike, None] = None,
    batch_size: int = 8,
    max_new_tokens: int = 32,
    num_beams: int = 1,
    max_samples: Optional[int] = None,
    progress: bool = True,
) -> Dict[str, float]:
    """Generate for every caption / VQA row of `dataset` (example schema), score, and write the files.

    Returns the metrics (see `score_predictions`); with `output_dir`, also writes `predictions.jsonl` and
    `metrics.json` there.
    """
    indices = scored_rows(dataset)
    if max_samples is not None:
        indices = indices[:max_samples]
    if not indices:
        raise ValueError("The data set holds no caption or VQA rows to evaluate.")
    rows = dataset.select(indices)
    row_list = [rows[index] for index in range(len(rows))]
    predictions = generate_predictions(
        model,
        processor,
        row_list,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        num_beams=num_beams,
        progress=progress,
    )
    metrics = score_predictions(row_list, predictions)
    if output_dir is not None:
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / PREDICTIONS_NAME, "w", encoding="utf-8") as handle:
            for row, prediction in zip(row_list, predictions):
                record = {
                    "example_id": row["example_id"],
                    "image_id": row["image_id"],
                    "task": row["task"],
                    "question_type": row["question_type"],
                    "prompt": row["prompt"],
                    "prediction": prediction,
                    "target": row["target"],
                    "references": [_jsonable(reference) for reference in row["references"]],
                }
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        (folder / METRICS_NAME).write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    return metrics
