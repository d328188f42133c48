"""Issue 18, sections 2 and 3, written as a transformers user writes the calls: `save_pretrained` saves the adapter
(bases recorded by id), `full=True` the merged model; the plain `Trainer` writes adapter-only checkpoints and gets
`[B, S, V]` logits in `compute_metrics`; `from_pretrained` on an adapter-only folder honours the loading options."""

import json
import os

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

import hf_vadapter
from conftest import build_model, random_image
from hf_vadapter.modeling.adapter_config import ADAPTER_WEIGHTS_NAME
from tiny_models import save_lm

FULL_WEIGHTS = {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"}


@pytest.fixture(scope="module")
def pair(tiny_bases):
    tower, lm = tiny_bases("vit", "llama")
    model, processor = build_model(tower, lm, hf_vadapter.MLPProjectorConfig(pool_size=2))
    return model, processor


def _batch(processor):
    return processor(
        images=[random_image(0), random_image(1)],
        text=["<image>what color?", "<image>describe the image."],
        text_target=["red.", "a red circle on the left."],
        padding=True,
        return_tensors="pt",
    )


# ------------------------------------------------------------------------------------------------ section 2


def test_save_pretrained_writes_the_adapter_and_full_true_the_merged_model(pair, tmp_path):
    model, processor = pair
    model.save_pretrained(tmp_path / "adapter", processor=processor)
    files = set(os.listdir(tmp_path / "adapter"))
    assert {ADAPTER_WEIGHTS_NAME, "config.json", "generation_config.json", "processor_config.json"} <= files
    assert not files & FULL_WEIGHTS
    config = json.loads((tmp_path / "adapter" / "config.json").read_text())
    assert config["text_model_name_or_path"] == model.config.text_model_name_or_path  # the bases, by id

    model.save_pretrained(tmp_path / "full", processor=processor, full=True)
    assert "model.safetensors" in os.listdir(tmp_path / "full")
    inputs = _batch(processor)
    with torch.no_grad():
        expected = model(**inputs).logits
        for folder in ("adapter", "full"):
            reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / folder, trust_remote_code=True)
            assert torch.equal(reloaded(**inputs).logits, expected), folder


def test_logits_follow_the_causal_lm_contract_unless_asked_for_the_supervised_positions(pair):
    model, processor = pair
    inputs = _batch(processor)
    with torch.no_grad():
        full = model(**inputs)
        kept = model(**inputs, supervised_logits_only=True)
    batch, length = inputs["input_ids"].shape
    assert full.logits.shape == (batch, length, model.config.vocab_size)
    supervised = int((inputs["labels"][:, 1:] != -100).sum())
    assert kept.logits.shape == (supervised, model.config.vocab_size)
    torch.testing.assert_close(full.loss, kept.loss)
    model.config.supervised_logits_only = True  # what hf_vadapter's training sets
    try:
        with torch.no_grad():
            assert model(**inputs).logits.shape == (supervised, model.config.vocab_size)
    finally:
        model.config.supervised_logits_only = False


def test_plain_trainer_writes_adapter_only_checkpoints_and_compute_metrics_gets_b_s_v(tiny_bases, tmp_path):
    tower, lm = tiny_bases("vit", "llama")
    model, processor = build_model(tower, lm, hf_vadapter.MLPProjectorConfig(pool_size=2))
    rows = [processor(images=[random_image(i)], text=["<image>what color?"], text_target=["red."]) for i in range(4)]
    dataset = Dataset.from_list([{k: v[0].tolist() for k, v in row.items()} for row in rows])
    seen = {}

    def compute_metrics(prediction):
        seen["shapes"] = (prediction.predictions.shape, prediction.label_ids.shape)
        return {"exact": float(np.mean(prediction.predictions.argmax(-1) == prediction.label_ids))}

    args = TrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=2, per_device_eval_batch_size=2,
        save_strategy="steps", save_steps=1, eval_strategy="steps", eval_steps=2, report_to=[], use_cpu=True,
        learning_rate=1e-3,
    )  # fmt: skip
    trainer = Trainer(
        model=model, args=args, train_dataset=dataset, eval_dataset=dataset, compute_metrics=compute_metrics
    )
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    for folder in (tmp_path / "run" / "checkpoint-1", tmp_path / "run" / "checkpoint-2", tmp_path / "final"):
        files = set(os.listdir(folder))
        assert ADAPTER_WEIGHTS_NAME in files and not files & FULL_WEIGHTS, folder
        assert (folder / ADAPTER_WEIGHTS_NAME).stat().st_size < 64 * 1024
    predictions, labels = seen["shapes"]
    assert predictions[:2] == labels and len(predictions) == 3  # [B, S, V] against [B, S]
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "final", trust_remote_code=True)
    for key, value in model.adapter_state_dict().items():
        assert torch.equal(reloaded.adapter_state_dict()[key], value), key


# ------------------------------------------------------------------------------------------------ section 3


@pytest.fixture(scope="module")
def saved(pair, tmp_path_factory):
    model, processor = pair
    folder = tmp_path_factory.mktemp("adapter")
    model.generation_config.max_new_tokens = 7  # a generation setting that must survive the save
    model.save_adapter(folder, processor=processor)
    return folder


def test_adapter_folder_honours_attn_implementation_device_map_and_config_kwargs(saved):
    model = AutoModelForCausalLM.from_pretrained(
        saved, trust_remote_code=True, attn_implementation="eager", device_map={"": "cpu"},
        output_hidden_states=True, low_cpu_mem_usage=True,
    )  # fmt: skip
    assert model.language_model.config._attn_implementation == "eager"
    assert model.vision_tower.config._attn_implementation == "eager"
    assert model.config.output_hidden_states and model.language_model.config.output_hidden_states
    assert set(model.hf_device_map) == {"vision_tower", "language_model"}
    assert {param.device.type for param in model.parameters()} == {"cpu"}
    direct = hf_vadapter.VisionAdapterForCausalLM.from_pretrained(saved, attn_implementation="eager", device_map="cpu")
    assert direct.language_model.config._attn_implementation == "eager"


def test_adapter_folder_records_its_name_and_keeps_the_generation_config(saved):
    assert (saved / "generation_config.json").is_file() and not (saved / "model.safetensors").exists()
    model = AutoModelForCausalLM.from_pretrained(saved, trust_remote_code=True)
    assert model.name_or_path == str(saved) and model.config._name_or_path == str(saved)
    assert model.generation_config.max_new_tokens == 7


def test_adapter_folder_dtype_auto_keeps_each_base_in_its_stored_dtype(tiny_bases, tmp_path):
    tower, _ = tiny_bases("vit", "llama")
    lm = save_lm("llama", tmp_path / "lm-bf16")
    AutoModelForCausalLM.from_pretrained(lm, dtype=torch.bfloat16).save_pretrained(lm)
    model, processor = build_model(tower, str(lm), hf_vadapter.MLPProjectorConfig(pool_size=2))
    model.save_pretrained(tmp_path / "adapter", processor=processor)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "adapter", trust_remote_code=True, dtype="auto")
    assert loaded.language_model.dtype == torch.bfloat16
    assert next(loaded.adapter.parameters()).dtype == torch.bfloat16
    assert loaded.vision_tower.dtype == torch.float32
    as_float = AutoModelForCausalLM.from_pretrained(tmp_path / "adapter", trust_remote_code=True, dtype=torch.float32)
    assert as_float.language_model.dtype == torch.float32


def test_adapter_folder_passes_hub_options_and_refuses_unknown_keywords(saved, tmp_path):
    cache = tmp_path / "cache"
    model = AutoModelForCausalLM.from_pretrained(
        saved, trust_remote_code=True, revision="main", cache_dir=str(cache), token=None, local_files_only=True
    )
    assert model.name_or_path == str(saved)
    with pytest.raises(TypeError, match="unknown keyword arguments \\['not_an_option'\\]"):
        hf_vadapter.VisionAdapterForCausalLM.from_pretrained(saved, not_an_option=1)
    with pytest.raises(TypeError, match="not_an_option"):
        AutoModelForCausalLM.from_pretrained(saved, trust_remote_code=True, not_an_option=1)


def test_subfolder_reaches_the_checkpoints_own_files_only(pair, tmp_path):
    """`subfolder=` (which the Auto classes always pass) finds an adapter-only or full checkpoint inside a folder;
    the bases still load from their recorded ids."""
    model, processor = pair
    model.save_pretrained(tmp_path / "repo" / "adapter", processor=processor)
    model.save_pretrained(tmp_path / "repo" / "full", processor=processor, full=True)
    inputs = _batch(processor)
    with torch.no_grad():
        expected = model(**inputs).logits
        for folder in ("adapter", "full"):
            for load in (AutoModelForCausalLM.from_pretrained, hf_vadapter.VisionAdapterForCausalLM.from_pretrained):
                reloaded = load(tmp_path / "repo", subfolder=folder, trust_remote_code=True)
                assert torch.equal(reloaded(**inputs).logits, expected), (folder, load)
    with pytest.raises(OSError, match="repo"):
        hf_vadapter.VisionAdapterForCausalLM.from_pretrained(tmp_path / "repo", subfolder="missing")
