"""One training run from the three argument dataclasses: what `hf-vadapter train` does, callable from Python.

    from hf_vadapter.training import parse_arguments, run_training
    result = run_training(*parse_arguments(["config.yaml"]))

Steps: build the model from the two bases (optionally starting the adapter from a previous run), the processor and
the data; optionally cache the tower's features; train with `VisionAdapterTrainer`; save the final adapter (plus the
run's arguments in `run_config.json`) into `output_dir`; evaluate.
"""

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import datasets
from transformers import TrainerCallback, set_seed

from ..hub.model_card import RUN_CONFIG_NAME
from ..modeling.modeling_vadapter import VisionAdapterForCausalLM
from ..modeling.processing_vadapter import VisionAdapterProcessor
from .arguments import DataArguments, ModelArguments, VisionAdapterTrainingArguments
from .checkpointing import load_partial_adapter
from .collator import VisionAdapterCollator
from .caption_share import with_caption_share
from .data import load_splits
from .describe_then_answer import describe_prompt_of, with_reference_descriptions
from .dtype_choice import resolve_language_model_dtype
from .feature_cache import FeatureCache
from .trainer import VisionAdapterTrainer

logger = logging.getLogger(__name__)


@dataclass
class TrainingRun:
    """What `run_training` produced: the trainer (model, state, log history) and the final metrics."""

    trainer: VisionAdapterTrainer
    train_metrics: Dict[str, float]
    eval_metrics: Dict[str, float]
    output_dir: str


def build_model_and_processor(model_args: ModelArguments) -> Tuple[VisionAdapterForCausalLM, VisionAdapterProcessor]:
    """The model on its two frozen bases with a new adapter, and its processor; the adapter may start from a
    previous run (`init_adapter_from`)."""
    if not (model_args.vision_model_name_or_path and model_args.text_model_name_or_path):
        raise ValueError("Training needs vision_model_name_or_path and text_model_name_or_path.")
    model = VisionAdapterForCausalLM.from_vision_text_pretrained(
        model_args.vision_model_name_or_path,
        model_args.text_model_name_or_path,
        model_args.build_adapter_config(),
        vision_revision=model_args.vision_revision,
        text_revision=model_args.text_revision,
        image_size=model_args.image_size,
        image_token=model_args.image_token,
        dtype=model_args.torch_dtype(),
        attn_implementation=model_args.attn_implementation,
    )
    # Training reads only the loss: the LM head runs at the supervised positions alone (see BENCHMARKS.md).
    model.config.supervised_logits_only = True
    language_model_dtype = resolve_language_model_dtype(model_args.language_model_dtype)
    if language_model_dtype is not None:
        model.cast_language_model(language_model_dtype)
    if model_args.init_adapter_from:
        report = load_partial_adapter(model, model_args.init_adapter_from)
        logger.info(
            "Adapter initialised from %s: %d tensors loaded, %d skipped, %d left as initialised.",
            model_args.init_adapter_from,
            len(report["loaded"]),
            len(report["skipped"]),
            len(report["untouched"]),
        )
    processor = VisionAdapterProcessor.for_model(
        model, use_chat_template=model_args.use_chat_template, image_placement=model_args.image_placement
    )
    return model, processor


def _record_run(output_dir: str, model_args: ModelArguments, data_args: DataArguments) -> None:
    values = {**dataclasses.asdict(model_args), **dataclasses.asdict(data_args)}
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    (Path(output_dir) / RUN_CONFIG_NAME).write_text(json.dumps(values, indent=1, sort_keys=True, default=str) + "\n")


def run_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: VisionAdapterTrainingArguments,
    callbacks: Optional[List[TrainerCallback]] = None,
    resume_from_checkpoint: Any = None,
) -> TrainingRun:
    """Train an adapter as the arguments say, save it into `training_args.output_dir`, and evaluate it.

    `resume_from_checkpoint` (or `training_args.resume_from_checkpoint`): a checkpoint folder, or True for the
    last one in `output_dir`.
    """
    set_seed(training_args.seed)  # the new adapter's initial weights follow the run's seed
    model, processor = build_model_and_processor(model_args)
    model.print_trainable_parameters()
    train_dataset, eval_dataset = load_splits(data_args)
    if data_args.describe_then_answer:
        # Generation describes first (the processor saves this); the evaluation rows keep their plain prompts.
        processor.describe_prompt = describe_prompt_of(train_dataset)
        train_dataset = with_reference_descriptions(train_dataset, processor)
    store = None
    if training_args.use_feature_cache:
        cache = FeatureCache(
            model,
            processor.image_processor,
            cache_dir=training_args.feature_cache_dir,
            storage_dtype=training_args.feature_cache_dtype,
            batch_size=training_args.feature_cache_batch_size,
        )
        # The main process computes what is missing; the others then find it in the cache.
        with training_args.main_process_first(desc="feature cache"):
            train_dataset = cache.prepare(train_dataset)
            if eval_dataset is not None:
                eval_dataset = cache.prepare(eval_dataset)
            cache.store.refresh()
        store = cache.store
    else:
        # Images are decoded by the collator, not by `datasets` while indexing: a corrupt one then names its row.
        train_dataset = train_dataset.cast_column("image", datasets.Image(decode=False))
        if eval_dataset is not None:
            eval_dataset = eval_dataset.cast_column("image", datasets.Image(decode=False))
    if data_args.caption_share is not None:  # after the cache: the repeated rows carry their image hashes
        train_dataset = with_caption_share(train_dataset, data_args.caption_share)
    collator = VisionAdapterCollator(processor, max_length=data_args.max_length, feature_store=store)
    length_column = training_args.length_column_name
    if training_args.train_sampling_strategy == "group_by_length" and length_column not in train_dataset.column_names:
        # Batches of similar lengths: random batches of short answers and long captions are ~40% padding.
        train_dataset = train_dataset.add_column(length_column, collator.token_lengths(train_dataset))
    trainer = VisionAdapterTrainer(
        model=model,
        args=training_args,
        data_collator=collator,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        callbacks=callbacks,
    )
    if trainer.is_world_process_zero():
        _record_run(training_args.output_dir, model_args, data_args)
    resume = resume_from_checkpoint if resume_from_checkpoint is not None else training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "last"):
        resume = True  # the last checkpoint in output_dir
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    trainer.save_state()
    eval_metrics: Dict[str, float] = {}
    if eval_dataset is not None and (training_args.do_eval or training_args.eval_strategy != "no"):
        step = trainer.state.global_step
        last = [entry for entry in trainer.state.log_history if entry.get("step") == step and "eval_loss" in entry]
        reloaded = training_args.load_best_model_at_end and trainer.state.best_model_checkpoint
        # The final weights were just evaluated unless the best checkpoint was loaded back since.
        eval_metrics = dict(last[-1]) if last and not reloaded else trainer.evaluate()
    return TrainingRun(trainer, dict(result.metrics), eval_metrics, training_args.output_dir)
