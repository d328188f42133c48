"""Generation-based evaluation: batched, cached generation over example rows, scored with the shipped metrics.

    from hf_vadapter.evaluation import evaluate_model
    metrics = evaluate_model(model, processor, dataset, output_dir="eval/")  # predictions.jsonl + metrics.json
"""

from .generation import generate_predictions
from .scoring import score_predictions

__all__ = ["generate_predictions", "score_predictions"]
