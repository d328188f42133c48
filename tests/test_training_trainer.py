"""VisionAdapterTrainer: adapter-only atomic checkpoints, exact resume, checkpoint rotation, best model, early
stopping, the CSV log and loss curve, frozen parameters, activation checkpointing and mixed precision."""

import csv
import json
import os

import pytest
import torch
from transformers import EarlyStoppingCallback, TrainerCallback

from hf_vadapter.data.synthetic import build_synthetic_dataset
from hf_vadapter.modeling.adapter_config import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME
from hf_vadapter.training import build_model_and_processor, run_training
from hf_vadapter.training.callbacks import CSV_NAME, CURVE_NAME
from hf_vadapter.training.collator import VisionAdapterCollator
from test_training_helpers import adapter_file, adapter_tensors, arguments, bases, max_abs_diff  # noqa: F401


class StopAt(TrainerCallback):
    """Interrupt training after `step` (as a killed job would, right after its checkpoint)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_checkpoints_hold_the_adapter_only_and_appear_whole(bases, tmp_path):
    run = run_training(*arguments(bases, tmp_path / "run", save_strategy="steps", save_steps=2))
    model = run.trainer.model
    names = sorted(os.listdir(tmp_path / "run"))
    assert [name for name in names if name.startswith("checkpoint-")] == ["checkpoint-2", "checkpoint-4"]
    assert not [name for name in names if name.startswith(".")], names  # no staging folder left behind
    checkpoint = tmp_path / "run" / "checkpoint-4"
    files = set(os.listdir(checkpoint))
    assert {ADAPTER_WEIGHTS_NAME, ADAPTER_CONFIG_NAME, "config.json", "optimizer.pt", "scheduler.pt",
            "rng_state.pth", "trainer_state.json", "processor_config.json"} <= files  # fmt: skip
    assert not files & {"model.safetensors", "pytorch_model.bin", "model.safetensors.index.json"}
    saved = adapter_file(checkpoint)
    assert set(saved) == set(model.adapter_state_dict())
    assert all(key.startswith("adapter.") for key in saved)
    # The final adapter (output_dir) equals the model in memory and the last checkpoint.
    assert max_abs_diff(adapter_file(tmp_path / "run"), adapter_tensors(model)) == 0
    assert max_abs_diff(saved, adapter_tensors(model)) == 0
    assert json.loads((tmp_path / "run" / "run_config.json").read_text())["adapter_type"] == "mlp_projector"


def test_frozen_parameters_get_no_grad_and_no_optimizer_state(bases, tmp_path):
    model_args, data_args, training_args = arguments(bases, tmp_path / "run", max_steps=2)
    before = {name: p.detach().clone() for name, p in build_model_and_processor(model_args)[0].named_parameters()}
    run = run_training(model_args, data_args, training_args)
    model, optimizer = run.trainer.model, run.trainer.optimizer
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable and {id(p) for group in optimizer.param_groups for p in group["params"]} == trainable
    assert {id(p) for p in optimizer.state} == trainable  # AdamW state for trainable parameters only
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert param.grad is None
            assert torch.equal(param, before[name]), name  # the bases are bit-identical after training
        else:
            assert name.startswith("adapter.")


def test_resume_continues_exactly(bases, tmp_path):
    # 24 rows, batch 4: 6 steps per epoch; the interruption at step 8 lies inside the second epoch.
    common = dict(max_steps=10, save_strategy="steps", save_steps=4, num_train_images=4, seed=3)
    straight = run_training(*arguments(bases, tmp_path / "straight", **common))
    reference = adapter_tensors(straight.trainer.model)

    interrupted = run_training(*arguments(bases, tmp_path / "resumed", **common), callbacks=[StopAt(8)])
    assert interrupted.trainer.state.global_step == 8
    assert sorted(p for p in os.listdir(tmp_path / "resumed") if p.startswith("checkpoint-")) == [
        "checkpoint-4",
        "checkpoint-8",
    ]
    # As a fresh process would: rebuild the model on its bases and resume from the last checkpoint.
    model_args, data_args, training_args = arguments(bases, tmp_path / "resumed", **common)
    resumed = run_training(model_args, data_args, training_args, resume_from_checkpoint=True)
    assert resumed.trainer.state.global_step == 10
    diff = max_abs_diff(adapter_tensors(resumed.trainer.model), reference)
    print(f"resume max abs diff: {diff:.3e}")
    assert diff <= 1e-6


def test_save_total_limit_keeps_the_newest(bases, tmp_path):
    run_training(*arguments(bases, tmp_path / "run", max_steps=5, save_strategy="steps", save_steps=1, save_total_limit=2))
    checkpoints = sorted(name for name in os.listdir(tmp_path / "run") if name.startswith("checkpoint-"))
    assert checkpoints == ["checkpoint-4", "checkpoint-5"]


def test_best_model_is_loaded_at_end_and_kept(bases, tmp_path):
    run = run_training(
        *arguments(
            bases,
            tmp_path / "run",
            max_steps=4,
            learning_rate=0.3,  # large steps: the evaluation loss moves around, so the best need not be the last
            eval_strategy="steps",
            eval_steps=1,
            save_strategy="steps",
            save_steps=1,
            save_total_limit=1,
            load_best_model_at_end=True,
            metric_for_best_model="eval_loss",
            greater_is_better=False,
        )
    )
    state = run.trainer.state
    losses = {entry["step"]: entry["eval_loss"] for entry in state.log_history if "eval_loss" in entry and entry["step"] <= 4}
    best_step = min(losses, key=losses.get)
    assert state.best_model_checkpoint == str(tmp_path / "run" / f"checkpoint-{best_step}")
    assert os.path.isdir(state.best_model_checkpoint)  # protected from the save_total_limit rotation
    assert max_abs_diff(adapter_tensors(run.trainer.model), adapter_file(state.best_model_checkpoint)) == 0


def test_early_stopping_stops_when_the_metric_stalls(bases, tmp_path):
    run = run_training(
        *arguments(
            bases,
            tmp_path / "run",
            max_steps=20,
            learning_rate=0.0,  # nothing moves: the evaluation loss cannot improve after the first evaluation
            eval_strategy="steps",
            eval_steps=1,
            save_strategy="steps",
            save_steps=1,
            save_total_limit=1,
            load_best_model_at_end=True,
            metric_for_best_model="eval_loss",
        ),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=2)],
    )
    assert run.trainer.state.global_step == 3


def test_csv_log_and_loss_curve_are_written(bases, tmp_path):
    run_training(*arguments(bases, tmp_path / "run", csv_log=True, loss_curve=True, eval_strategy="steps", eval_steps=2))
    with open(tmp_path / "run" / CSV_NAME) as handle:
        rows = list(csv.DictReader(handle))
    losses = [row for row in rows if row["name"] == "loss"]
    assert [int(row["step"]) for row in losses] == [1, 2, 3, 4]
    assert all(float(row["value"]) > 0 for row in losses)
    assert any(row["name"] == "eval_loss" for row in rows)
    curve = (tmp_path / "run" / CURVE_NAME).read_bytes()
    assert curve[:8] == b"\x89PNG\r\n\x1a\n" and len(curve) > 2000


def test_activation_checkpointing_trains_the_same(bases, tmp_path):
    plain = run_training(*arguments(bases, tmp_path / "plain", max_steps=2))
    checkpointed = run_training(*arguments(bases, tmp_path / "ckpt", max_steps=2, activation_checkpointing=True))
    model = checkpointed.trainer.model
    assert any(getattr(module, "gradient_checkpointing", False) for module in model.language_model.modules())
    assert max_abs_diff(adapter_tensors(plain.trainer.model), adapter_tensors(model)) < 1e-6


def test_bf16_flag_reaches_accelerate(bases, tmp_path):
    run = run_training(*arguments(bases, tmp_path / "run", max_steps=1, bf16=True))
    assert run.trainer.accelerator.mixed_precision == "bf16"
    assert all(torch.isfinite(value).all() for value in adapter_tensors(run.trainer.model).values())
    assert run.trainer.model.adapter.mlp[0].weight.dtype == torch.float32  # autocast, fp32 master weights


def test_a_save_killed_midway_leaves_no_checkpoint(bases, tmp_path, monkeypatch):
    from transformers.trainer_utils import get_last_checkpoint

    from hf_vadapter.training import VisionAdapterTrainer

    original = VisionAdapterTrainer._save_rng_state

    def dies_at_step_4(self, output_dir):
        if self.state.global_step == 4:
            raise KeyboardInterrupt("killed while saving")
        return original(self, output_dir)

    monkeypatch.setattr(VisionAdapterTrainer, "_save_rng_state", dies_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        run_training(*arguments(bases, tmp_path / "run", save_strategy="steps", save_steps=2))
    names = os.listdir(tmp_path / "run")
    assert "checkpoint-2" in names and "checkpoint-4" not in names
    assert get_last_checkpoint(str(tmp_path / "run")) == str(tmp_path / "run" / "checkpoint-2")
    monkeypatch.setattr(VisionAdapterTrainer, "_save_rng_state", original)
    # The next run resumes from the last complete checkpoint and clears the half-written one when it saves again.
    resumed = run_training(*arguments(bases, tmp_path / "run", save_strategy="steps", save_steps=2), resume_from_checkpoint=True)
    assert resumed.trainer.state.global_step == 4
    assert sorted(name for name in os.listdir(tmp_path / "run") if "checkpoint-" in name) == ["checkpoint-2", "checkpoint-4"]


def test_token_lengths_are_the_collated_lengths(bases, tmp_path):
    model, processor = build_model_and_processor(arguments(bases, tmp_path)[0])
    rows = build_synthetic_dataset("train", 2, image_size=32, seed=0)
    collator = VisionAdapterCollator(processor, max_length=128)
    collated = [int(collator([row])["attention_mask"].sum()) for row in rows]
    assert collator.token_lengths(rows, chunk_size=5) == collated
    assert len(set(collated)) > 2  # captions and the question types really differ in length


def test_image_placement_reaches_the_collated_prompts_and_the_saved_processor(bases, tmp_path):
    run = run_training(*arguments(bases, tmp_path / "run", image_placement="end"))
    processor = run.trainer.processing_class
    row = build_synthetic_dataset("train", 1, image_size=32, seed=0)[1]  # a question
    ids = VisionAdapterCollator(processor, max_length=128)([row])["input_ids"][0].tolist()
    question = processor.tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
    question_end = next(i for i in range(len(ids)) if ids[i : i + len(question)] == question) + len(question)
    assert ids.index(processor.image_token_id) >= question_end
    saved = json.loads((tmp_path / "run" / "processor_config.json").read_text())
    assert saved["image_placement"] == "end"


def test_group_by_length_batches_rows_of_similar_length(bases, tmp_path):
    run = run_training(
        *arguments(
            bases,
            tmp_path / "run",
            num_train_images=20,  # 120 rows: the sampler sorts within mega-batches of 7 batches
            train_sampling_strategy="group_by_length",
            use_feature_cache=True,
            feature_cache_dir=str(tmp_path / "cache"),
        )
    )
    lengths = run.trainer.train_dataset["length"]
    batches = list(run.trainer.get_train_dataloader().batch_sampler)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))

    def mean_spread(batches) -> float:
        return sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)

    shuffled = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    random_batches = [shuffled[start : start + 4] for start in range(0, len(shuffled), 4)]
    assert mean_spread(batches) < 0.5 * mean_spread(random_batches)
