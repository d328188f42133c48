"""Progressive stages, joint image-text + text-only training, and the text-only instruction data."""

import json

import pytest
import torch
import yaml
from transformers import TrainerCallback

from hf_vadapter import cli
from hf_vadapter.modeling.adapters import ADAPTER_REGISTRY
from hf_vadapter.training import (
    VisionAdapterCollator,
    VisionAdapterTrainer,
    build_instruction_examples,
    build_model_and_processor,
    load_instruction_dataset,
    run_training,
)
from hf_vadapter.training.instructions import BUILTIN_INSTRUCTIONS
from test_training_helpers import adapter_file, arguments, bases, max_abs_diff, run_values  # noqa: F401


def test_builtin_instructions_are_regenerated_exactly():
    rows = build_instruction_examples()
    assert json.loads(BUILTIN_INSTRUCTIONS.read_text()) == rows == build_instruction_examples()
    assert 250 <= len(rows) <= 500
    assert all(set(row) == {"instruction", "input", "output"} and row["output"] for row in rows)
    for row in rows:
        words = row["instruction"].split()
        if row["instruction"].startswith("What is ") and words[3] in ("plus", "minus", "times"):
            a, b = int(words[2]), int(words[4].rstrip("?"))
            assert int(row["output"]) == {"plus": a + b, "minus": a - b, "times": a * b}[words[3]]
        if row["instruction"] == "Spell the word backwards.":
            assert row["output"] == row["input"][::-1]


def test_user_instructions_in_alpaca_json(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps([{"instruction": "Translate to French.", "input": "red", "output": "rouge"},
                                {"instruction": "Say hello.", "output": "Hello!"}]))  # fmt: skip
    ds = load_instruction_dataset(str(path))
    assert ds["prompt"] == ["Translate to French.\n\nred", "Say hello."]
    assert ds["target"] == ["rouge", "Hello!"] and set(ds["task"]) == {"text"} and ds["image"] == [None, None]
    path.write_text(json.dumps([{"instruction": "No output."}]))
    with pytest.raises(ValueError, match="row 0"):
        load_instruction_dataset(str(path))


def test_text_micro_batch_keeps_the_accumulated_vision_gradients(bases, tmp_path):
    # With gradient accumulation and batches that are not grouped by modality, an image micro-batch and then a
    # text-only one make up one optimizer step: each group must keep the gradients of its own micro-batch.
    model_args, _, training_args = arguments(
        bases, tmp_path / "run", adapter_type="llama_adapter_v2", adapter_config={}, gradient_accumulation_steps=2
    )
    model, processor = build_model_and_processor(model_args)
    trainer = VisionAdapterTrainer(model=model, args=training_args, processing_class=processor)
    trainer.current_gradient_accumulation_steps = 2  # what the Trainer's loop sets before its micro-batches
    image_batch = processor(images=[_red_image()], text=["<image>What colour?"], text_target=["red."])
    text_batch = processor(text=["Say hello."], text_target=["Hello!"])
    groups = model.adapter.parameter_groups()
    parameters = dict(model.named_parameters())
    trainer.training_step(model, dict(image_batch))
    vision = {name: parameters[name].grad.clone() for name in groups["vision"]}
    assert all(parameters[name].grad is None for name in groups["instruction"])
    trainer.training_step(model, dict(text_batch))
    for name, grad in vision.items():
        assert parameters[name].grad is not None, f"the text micro-batch erased {name}'s gradient"
        assert torch.equal(parameters[name].grad, grad), name
    assert all(parameters[name].grad is not None for name in groups["instruction"])


def _red_image():
    from PIL import Image

    return Image.new("RGB", (32, 32), (220, 20, 20))


def test_text_rows_mix_into_training(bases, tmp_path):
    model_args, data_args, training_args = arguments(
        bases, tmp_path / "run", instruction_data="builtin", max_instruction_samples=6, max_steps=2
    )
    run = run_training(model_args, data_args, training_args)
    train = run.trainer.train_dataset
    assert train.num_rows == 12 + 6 and train["task"].count("text") == 6
    batch = VisionAdapterCollator(run.trainer.processing_class, 128)([train[0], train[len(train) - 1]])
    assert batch["has_image"].tolist() == [True, False] and batch["pixel_values"].shape[0] == 1


def test_stages_hand_over_through_the_previous_output(bases, tmp_path):
    stage1 = run_values(bases, tmp_path / "unused", max_steps=2)
    stage1.pop("output_dir")
    config = {
        **stage1,
        "output_dir": str(tmp_path / "stages"),
        "stages": [
            {"name": "first"},
            # lr 0: the second stage's adapter stays what it started from, which must be the first stage's.
            {"name": "second", "init_adapter_from": "{previous}", "learning_rate": 0.0},
        ],
    }
    path = tmp_path / "stages.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["train", str(path)]) == 0
    first, second = adapter_file(tmp_path / "stages" / "first"), adapter_file(tmp_path / "stages" / "second")
    assert max_abs_diff(first, second) == 0
    recorded = json.loads((tmp_path / "stages" / "second" / "run_config.json").read_text())
    assert recorded["init_adapter_from"] == str(tmp_path / "stages" / "first")


class GroupChanges(TrainerCallback):
    """Per optimizer step: which parameter groups moved."""

    def __init__(self, groups):
        self.groups, self.before, self.steps = groups, None, []

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self.before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        params = dict(model.named_parameters())
        moved = {name for name, old in self.before.items() if not torch.equal(params[name], old)}
        self.steps.append({group: bool(moved & set(names)) for group, names in self.groups.items()})


@pytest.mark.skipif("llama_adapter_v2" not in ADAPTER_REGISTRY, reason="LLaMA-Adapter V2 is not registered")
def test_llama_adapter_v2_joint_training_updates_disjoint_groups(bases, tmp_path):
    args = arguments(
        bases,
        tmp_path / "run",
        adapter_type="llama_adapter_v2",
        adapter_config={},
        instruction_data="builtin",
        max_instruction_samples=8,
        max_steps=6,
        learning_rate=1e-2,
    )
    groups = build_model_and_processor(args[0])[0].adapter.parameter_groups()
    assert groups["vision"] and groups["instruction"]
    recorder = GroupChanges(groups)
    run_training(*args, callbacks=[recorder])
    assert len(recorder.steps) == 6
    # Both groups learn over the run (each only from its own rows: see the gradient tests).
    assert any(step["vision"] for step in recorder.steps) and any(step["instruction"] for step in recorder.steps)


@pytest.mark.skipif("palm2_vadapter" not in ADAPTER_REGISTRY, reason="PaLM2-VAdapter is not registered")
def test_palm2_vadapter_stage2_starts_from_stage1(tiny_bases, tmp_path):
    from hf_vadapter.modeling.adapter_config import ADAPTER_CONFIG_NAME
    from hf_vadapter.modeling.safe_io import load_safetensors

    tower, tiny_lm = tiny_bases("vit", "llama", chat_template=True)
    _, large_lm = tiny_bases("vit", "qwen2", chat_template=True)
    shared = run_values((tower, tiny_lm), tmp_path / "unused", max_steps=2)
    for key in ("output_dir", "adapter_config", "text_model_name_or_path"):
        shared.pop(key)
    config = {
        **shared,
        "adapter_type": "palm2_vadapter",
        "output_dir": str(tmp_path / "palm2"),
        "stages": [
            {"name": "stage1", "text_model_name_or_path": tiny_lm, "tasks": "caption",
             "adapter_config": {"stage": 1, "num_visual_tokens": 4, "num_heads": 4}},
            {"name": "stage2", "text_model_name_or_path": large_lm, "learning_rate": 0.0,
             "adapter_config": {"stage1_name_or_path": "{previous}", "num_visual_tokens": 4, "num_heads": 4,
                                "resampler_hidden_size": 32}},
        ],
    }  # fmt: skip
    path = tmp_path / "palm2.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["train", str(path)]) == 0
    saved = json.loads((tmp_path / "palm2" / "stage2" / ADAPTER_CONFIG_NAME).read_text())
    assert saved["stage"] == 2 and saved["tiny_lm_init"] == "stage1"
    assert saved["stage1_name_or_path"] == str(tmp_path / "palm2" / "stage1")
    # With lr 0 in stage 2, its tiny LM is still exactly the one stage 1 trained.
    stage1 = load_safetensors(tmp_path / "palm2" / "stage1" / "adapter_model.safetensors")
    stage2 = load_safetensors(tmp_path / "palm2" / "stage2" / "adapter_model.safetensors")
    trained = {key.removeprefix("language_model."): value for key, value in stage1.items() if key.startswith("language_model.model.layers")}
    carried = {key: value for key, value in stage2.items() if "layers" in key and key.startswith("adapter.")}
    assert trained and carried
    matches = [name for name, value in trained.items() for key, other in carried.items()
               if key.endswith(name.removeprefix("model.")) and torch.equal(value, other)]  # fmt: skip
    assert len(matches) == len(trained), (sorted(trained)[:3], sorted(carried)[:3])


@pytest.mark.skipif("llama_adapter_v2" not in ADAPTER_REGISTRY, reason="LLaMA-Adapter V2 is not registered")
def test_mixed_batches_are_split_for_disjoint_groups(bases, tmp_path):
    # Batches mix image and text rows: the trainer runs each kind as its own forward.
    args = arguments(
        bases,
        tmp_path / "run",
        adapter_type="llama_adapter_v2",
        adapter_config={},
        instruction_data="builtin",
        max_instruction_samples=12,
        per_device_train_batch_size=12,
        max_steps=2,
    )
    seen = []

    class Spy(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append(state.global_step)

    run = run_training(*args, callbacks=[Spy()])
    assert seen == [1, 2]
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in run.trainer.state.log_history if "loss" in entry)
