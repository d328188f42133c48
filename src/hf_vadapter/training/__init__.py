"""Training on the HF Trainer: arguments, collator, feature cache, trainer and stages.

    from hf_vadapter.training import parse_arguments, run_training
    run = run_training(*parse_arguments(["config.yaml", "--max_steps", "100"]))

Or piece by piece: `VisionAdapterCollator` turns example rows into batches, `FeatureCache` stores the frozen tower's
features, `VisionAdapterTrainer` trains with adapter-only atomic checkpoints and generation-based evaluation, and
`run_stages` chains progressive stages.
"""

from .arguments import (
    DataArguments,
    ModelArguments,
    VisionAdapterTrainingArguments,
    argument_parser,
    parse_arguments,
)
from .callbacks import CSVLoggerCallback, LossCurveCallback, plot_loss_curve
from .checkpointing import load_partial_adapter, save_adapter_files
from .collator import VisionAdapterCollator
from .data import load_eval_split, load_splits
from .feature_cache import FeatureCache, FeatureStore
from .instructions import build_instruction_examples, load_instruction_dataset, read_alpaca_json
from .run import TrainingRun, build_model_and_processor, run_training
from .trainer import VisionAdapterTrainer

__all__ = [
    "CSVLoggerCallback",
    "DataArguments",
    "FeatureCache",
    "FeatureStore",
    "LossCurveCallback",
    "ModelArguments",
    "TrainingRun",
    "VisionAdapterCollator",
    "VisionAdapterTrainer",
    "VisionAdapterTrainingArguments",
    "argument_parser",
    "build_instruction_examples",
    "build_model_and_processor",
    "load_eval_split",
    "load_instruction_dataset",
    "load_partial_adapter",
    "load_splits",
    "parse_arguments",
    "plot_loss_curve",
    "read_alpaca_json",
    "run_training",
    "save_adapter_files",
]
