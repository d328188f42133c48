"""`VisionAdapterTrainer`: the HF Trainer with adapter-only, atomic checkpoints and generation-based evaluation.

The plain `transformers.Trainer` already writes adapter-only checkpoints (it calls `model.save_pretrained`, which
saves the adapter) and hands `compute_metrics` [B, S, V] logits. What this subclass changes, and nothing else:

- **The processor is part of the checkpoint** (`_save`): written with the adapter and listed in its manifest, so
  the folder can be pushed as it is (the plain Trainer writes the processor after the save, outside the manifest).
- **Resuming and the best model load the adapter** (`_load_from_checkpoint`, `_load_best_model`): transformers
  5.24's Trainer reads `adapter_model.safetensors` only for PEFT models; for any other model it asks for a shard
  index (resume) or `pytorch_model.bin` (best model), so the plain Trainer cannot load an adapter-only checkpoint
  back. These two load it onto the bases the trainer already holds, after checking bases and adapter config.
- **Checkpoints appear atomically** (`_save_checkpoint`): everything is written into a hidden folder, which is
  renamed to `checkpoint-N` once complete, so `resume_from_checkpoint=True` never picks a half-written one.
- **Evaluation generates** (`evaluation_loop`): after the loss, the evaluation rows are answered with batched,
  cached generation and scored (CIDEr + BLEU for captions, VQAv2 accuracy overall and per question type), so
  `metric_for_best_model="cider"` or `"vqa_accuracy"` and `EarlyStoppingCallback` work on them.
- **Joint training** (`compute_loss`): an adapter that routes its gradients by modality (LLaMA-Adapter V2's disjoint
  groups, `VisionAdapter.routes_gradients_by_modality`) needs each forward to hold one kind of row, so a batch mixing
  image-text and text-only rows runs as two forwards (`joint_training.joint_loss`). The routing itself is the
  adapter's: nothing here touches gradients.
"""

import logging
import os
import shutil
from typing import Optional

import torch
from accelerate.utils import gather_object
from transformers import Trainer
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, SaveStrategy, rotate_checkpoints

from ..modeling.errors import NonFiniteError
from ..modeling.modeling_vadapter import VisionAdapterForCausalLM
from ..modeling.safe_io import promote_directory
from .callbacks import CSVLoggerCallback, LossCurveCallback
from .checkpointing import (
    is_adapter_checkpoint,
    load_adapter_checkpoint,
    save_adapter_files,
    staging_name,
)
from .joint_training import joint_loss
from .length_sampler import LengthBucketSampler
from .time_budget import TrainingClock, cosine_with_clock

logger = logging.getLogger(__name__)


class VisionAdapterTrainer(Trainer):
    """A `transformers.Trainer` for `VisionAdapterForCausalLM` (see the module docstring for what differs).

    Pass the processor as `processing_class`; it is saved into every checkpoint and drives evaluation generation.
    With `VisionAdapterTrainingArguments`, the CSV log and loss curve callbacks are added unless switched off.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(self.args, "csv_log", False):
            self.add_callback(CSVLoggerCallback())
        if getattr(self.args, "loss_curve", False):
            self.add_callback(LossCurveCallback())
        self.clock = None
        if getattr(self.args, "max_train_minutes", None) is not None:
            self.clock = TrainingClock(60 * self.args.max_train_minutes, getattr(self.args, "time_reserve_steps", 0))
            self.add_callback(self.clock)
        model = self._adapter_model()
        self.splits_mixed_batches = model is not None and model.adapter.routes_gradients_by_modality

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.clock is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        optimizer = self.optimizer if optimizer is None else optimizer
        warmup = self.args.get_warmup_steps(num_training_steps)
        self.lr_scheduler = cosine_with_clock(optimizer, warmup, num_training_steps, self.clock)
        return self.lr_scheduler

    def _adapter_model(self) -> Optional[VisionAdapterForCausalLM]:
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        return model if isinstance(model, VisionAdapterForCausalLM) else None

    # ------------------------------------------------------------------------------------------ saving

    def _save(self, output_dir: Optional[str] = None, state_dict=None) -> None:
        """Write the adapter-only checkpoint (never the frozen bases) and the training arguments."""
        model = self._adapter_model()
        if model is None:
            return super()._save(output_dir, state_dict)
        if not self.args.should_save:
            return
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        save_adapter_files(
            model, output_dir, processor=self.processing_class, state_dict=state_dict, training_args=self.args
        )

    def _save_checkpoint(self, model, trial) -> None:
        """Assemble `checkpoint-<step>` in a hidden folder and rename it into place once every file is written."""
        run_dir = self._get_output_dir(trial=trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        final = os.path.join(run_dir, name)
        staging = os.path.join(run_dir, staging_name(name))
        if self.args.should_save:
            if os.path.isdir(staging):  # left over from a run killed while saving
                shutil.rmtree(staging)
            os.makedirs(staging)
        self.accelerator.wait_for_everyone()

        if self.hp_search_backend is None and trial is None:
            self.store_flos()
        self.save_model(staging, _internal_call=True)
        if not self.args.save_only_model:
            self._save_optimizer_and_scheduler(staging)
            self._save_scaler(staging)
            self._save_rng_state(staging)  # every process writes its own RNG file
        self.accelerator.wait_for_everyone()

        strategy_saves = self.args.save_strategy in (SaveStrategy.STEPS, SaveStrategy.EPOCH, SaveStrategy.BEST)
        if strategy_saves and self.state.best_global_step:
            best = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.best_global_step}")
            if self.state.best_global_step == self.state.global_step or os.path.isdir(best):
                self.state.best_model_checkpoint = best

        if self.args.should_save:
            # As the Trainer does: record the state of stateful callbacks (early stopping) and of the control.
            for callback in self.callback_handler.callbacks + [self.control]:
                if isinstance(callback, ExportableState):
                    callback_name = type(callback).__name__
                    if isinstance(self.state.stateful_callbacks.get(callback_name), list):
                        self.state.stateful_callbacks[callback_name].append(callback.state())
                    else:
                        self.state.stateful_callbacks[callback_name] = callback.state()
            self.state.save_to_json(os.path.join(staging, "trainer_state.json"))
            promote_directory(staging, final)
        self.accelerator.wait_for_everyone()

        if self.args.push_to_hub:
            self._push_from_checkpoint(final)
        if self.args.should_save:
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )

    # ------------------------------------------------------------------------------------------ loading

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        target = self._adapter_model() if model is None else self.accelerator.unwrap_model(model)
        if isinstance(target, VisionAdapterForCausalLM) and is_adapter_checkpoint(resume_from_checkpoint):
            logger.info("Loading the adapter from %s.", resume_from_checkpoint)
            load_adapter_checkpoint(target, resume_from_checkpoint)
            return
        super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        model = self._adapter_model()
        best = self.state.best_model_checkpoint
        if model is not None and best is not None and is_adapter_checkpoint(best):
            logger.info("Loading the best adapter from %s (score: %s).", best, self.state.best_metric)
            load_adapter_checkpoint(model, best)
            return
        super()._load_best_model()

    # ------------------------------------------------------------------------------------------ batches

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        length_column = self.args.length_column_name
        if self.args.train_sampling_strategy == "group_by_length" and length_column in getattr(
            dataset, "column_names", ()
        ):
            return LengthBucketSampler(dataset[length_column], self._global_batch_size(), seed=self._data_seed())
        return super()._get_train_sampler(train_dataset)

    def _global_batch_size(self) -> int:
        return self.args.per_device_train_batch_size * self.args.world_size * self.args.gradient_accumulation_steps

    def _data_seed(self) -> int:
        return self.args.data_seed if self.args.data_seed is not None else self.args.seed

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        has_image = inputs.pop("has_image", None)
        if has_image is not None and self.splits_mixed_batches:
            # A batch mixing image-text and text-only rows: each kind runs as its own forward, so each trains only
            # its own parameter group; the two losses add up to the whole batch's loss.
            loss = joint_loss(model, inputs, has_image, num_items_in_batch)
            # As Trainer.compute_loss: the token count spans all processes, whose gradients DDP averages.
            if num_items_in_batch is not None and self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes
            return (loss, {"loss": loss}) if return_outputs else loss
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # The Trainer's own NaN filter already reads the loss on the host every step, so this adds no sync.
        if not bool(torch.isfinite(loss)):
            raise NonFiniteError(
                f"The training loss is {loss.item()} at step {self.state.global_step + 1}: training stopped before "
                "the optimizer step, so the weights and the checkpoints saved so far stay finite. Resume from the "
                "last checkpoint with a lower learning_rate, float32 instead of float16, or max_grad_norm set."
            )
        return loss

    # ------------------------------------------------------------------------------------------ evaluation

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        if getattr(self.args, "generation_eval", False) and self.processing_class is not None:
            dataset = getattr(dataloader, "dataset", None)
            if dataset is not None and hasattr(dataset, "column_names") and "task" in dataset.column_names:
                metrics = self.generation_metrics(dataset)
                output.metrics.update({f"{metric_key_prefix}_{key}": value for key, value in metrics.items()})
        return output

    def generation_metrics(self, dataset) -> dict:
        """Generate answers for the scorable rows of `dataset` (split across processes) and score them."""
        from ..evaluation.generation import generate_predictions  # evaluation imports the collator of this package
        from ..evaluation.scoring import score_predictions, scored_rows

        model = self._adapter_model()
        if model is None:
            return {}
        indices = scored_rows(dataset)
        limit = getattr(self.args, "generation_max_samples", None)
        if limit is not None:
            indices = indices[:limit]
        if not indices:
            return {}
        rows = dataset.select(indices)
        with self.accelerator.split_between_processes(list(range(len(rows)))) as mine:
            local = generate_predictions(
                model,
                self.processing_class,
                [rows[index] for index in mine],
                batch_size=self.args.per_device_eval_batch_size,
                max_new_tokens=self.args.generation_max_new_tokens,
                num_beams=self.args.generation_num_beams,
                progress=self.is_local_process_zero() and not self.args.disable_tqdm,
                description="Evaluation generation",
            )
        predictions = gather_object(local) if self.accelerator.num_processes > 1 else local
        self._last_predictions = predictions
        return score_predictions([rows[index] for index in range(len(rows))], predictions)
