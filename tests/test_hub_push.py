"""The push's folder checks, file selection, model card and CLI hooks, in-process with `dry_run=True` (no server).

The round trip through a Hub server is in test_hub_roundtrip.py.
"""

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file

import hf_vadapter
from conftest import build_model
from hf_vadapter.modeling.adapter_config import ADAPTER_CONFIG_NAME
from hf_vadapter.hub.push import HubPushError, add_push_arguments, inspect_checkpoint, push_adapter, run_push
from hf_vadapter.hub.model_card import read_training_info

HUB_IDS = {"vision_model_name_or_path": "org/tiny-vit", "text_model_name_or_path": "org/tiny-llama"}


def _record_hub_ids(model) -> None:
    """Pretend the bases were loaded from Hub ids (the tiny bases are local folders); the next save records them."""
    for key, value in HUB_IDS.items():
        setattr(model.config, key, value)
    model.config.adapter_config = {**model.config.adapter_config, **HUB_IDS}
    model.config.vision_revision = "a" * 40


@pytest.fixture(scope="module")
def saved(tiny_bases, tmp_path_factory):
    """(adapter-only folder with Hub ids, full-save folder, trainable parameter count) of one tiny model."""
    root = tmp_path_factory.mktemp("push")
    model, processor = build_model(*tiny_bases("vit", "llama"), hf_vadapter.MLPProjectorConfig(pool_size=2))
    model.save_adapter(root / "local", processor=processor)
    model.save_pretrained(root / "full", processor=processor, full=True)
    _record_hub_ids(model)
    model.save_adapter(root / "adapter", processor=processor)
    return root / "adapter", root / "full", root / "local", model.get_nb_trainable_parameters()[0]


@pytest.fixture
def adapter_folder(saved, tmp_path) -> Path:
    """A private copy of the adapter-only folder, free to damage."""
    return Path(shutil.copytree(saved[0], tmp_path / "adapter"))


def test_dry_run_selects_adapter_files_and_renders_the_card(saved):
    folder, _, _, trainable = saved
    result = push_adapter(folder, "org/my-adapter", dry_run=True)
    assert result.commit_oid is None
    names = set(result.uploaded)
    assert {"adapter_model.safetensors", "config.json", "README.md", "processor_config.json", "tokenizer.json",
            "tokenizer_config.json", "modeling_vadapter.py", "configuration_vadapter.py"} <= names
    assert ADAPTER_CONFIG_NAME in names
    assert not [n for n in names if n.startswith("model.") or n.endswith((".bin", ".pt"))]
    py_files = {p.name for p in folder.glob("*.py")}
    assert py_files <= names

    card = ModelCard(result.model_card)
    assert card.data.base_model == ["org/tiny-vit", "org/tiny-llama"]
    assert card.data.base_model_relation == "adapter"
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "image-text-to-text"
    assert card.data.license == "other"
    assert {"hf_vadapter", "mlp_projector", "custom_code"} <= set(card.data.tags)
    assert f"{trainable:,d} trainable parameters" in card.text
    assert f"revision `{'a' * 40}`" in card.text  # the pinned tower
    assert "`main` (not pinned" in card.text  # the unpinned LM
    assert "| pool_size | `2` |" in card.text
    assert "No training data or metrics were recorded" in card.text


def _break(folder: Path, how: str) -> None:
    if how == "no adapter config":
        (folder / ADAPTER_CONFIG_NAME).unlink()
    elif how == "no adapter weights":
        (folder / "adapter_model.safetensors").unlink()
    elif how == "no config.json":
        (folder / "config.json").unlink()
    elif how == "truncated weights":
        data = (folder / "adapter_model.safetensors").read_bytes()
        (folder / "adapter_model.safetensors").write_bytes(data[: len(data) - 64])
    elif how == "garbage weights":
        (folder / "adapter_model.safetensors").write_bytes(b"not a safetensors file" * 8)
    elif how == "full weights present":
        save_file({"language_model.lm_head.weight": torch.zeros(2, 2)}, str(folder / "model.safetensors"))
    elif how == "pickled weights present":
        (folder / "pytorch_model.bin").write_bytes(b"\x80\x04")
    elif how == "tower weights in adapter file":
        weights = load_file(str(folder / "adapter_model.safetensors"))
        weights["vision_tower.embeddings.cls_token"] = torch.zeros(1, 1, 32)
        save_file(weights, str(folder / "adapter_model.safetensors"))
    elif how == "NaN weights":
        weights = load_file(str(folder / "adapter_model.safetensors"))
        first = sorted(weights)[0]
        weights[first] = torch.full_like(weights[first], float("nan"))
        save_file(weights, str(folder / "adapter_model.safetensors"))
    elif how == "no processor":
        (folder / "processor_config.json").unlink()
    elif how == "no remote code":
        (folder / "modeling_vadapter.py").unlink()
    elif how == "other model":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    elif how == "adapter type disagrees":
        config = json.loads((folder / ADAPTER_CONFIG_NAME).read_text())
        (folder / ADAPTER_CONFIG_NAME).write_text(json.dumps({**config, "adapter_type": "perceiver_resampler"}))
    elif how == "no recorded base":
        config = json.loads((folder / "config.json").read_text())
        config["text_model_name_or_path"] = None
        (folder / "config.json").write_text(json.dumps(config))
    else:
        raise AssertionError(how)


REFUSALS = {
    "no adapter config": f"has no {ADAPTER_CONFIG_NAME}",
    "no adapter weights": "has no adapter_model.safetensors",
    "no config.json": "has no config.json",
    "truncated weights": "truncated or corrupt",
    "garbage weights": "truncated or corrupt",
    "full weights present": "include the frozen bases",
    "pickled weights present": "pytorch_model.bin",
    "tower weights in adapter file": "vision_tower.embeddings.cls_token",
    "NaN weights": "NaN or infinite",
    "no processor": "no processor files",
    "no remote code": "has no modeling_vadapter.py",
    "other model": "not an hf_vadapter 'vision_adapter' model",
    "adapter type disagrees": "come from different saves",
    "no recorded base": "does not record the text base",
}


@pytest.mark.parametrize("how", sorted(REFUSALS))
def test_refuses_a_folder_that_is_not_a_valid_adapter_checkpoint(adapter_folder, how):
    _break(adapter_folder, how)
    with pytest.raises(hf_vadapter.CheckpointError, match=REFUSALS[how].replace("(", r"\(")):
        push_adapter(adapter_folder, "org/my-adapter", dry_run=True)


def test_refuses_local_base_paths_unless_allowed(saved):
    _, _, local, _ = saved
    with pytest.raises(hf_vadapter.CheckpointError, match="recorded as the local path"):
        inspect_checkpoint(local)
    result = push_adapter(local, "org/my-adapter", allow_local_bases=True, dry_run=True)
    card = ModelCard(result.model_card)
    assert card.data.base_model is None  # a local path is no Hub base_model
    assert "a local path, not on the Hub" in card.text


def test_refuses_a_commit_id_as_the_branch(saved):
    with pytest.raises(HubPushError, match="commit id"):
        push_adapter(saved[0], "org/my-adapter", revision="b" * 40, dry_run=True)


def test_include_base_needs_a_full_save_and_uploads_it(saved):
    folder, full, _, trainable = saved
    with pytest.raises(hf_vadapter.CheckpointError, match="include_base=True pushes a full model"):
        inspect_checkpoint(folder, include_base=True)
    result = push_adapter(full, "org/my-full-model", include_base=True, allow_local_bases=True, dry_run=True)
    assert "model.safetensors" in result.uploaded
    card = ModelCard(result.model_card)
    assert card.data.base_model_relation == "finetune"
    assert "saved **together with its frozen bases**" in card.text
    adapter_only = trainable  # the MLP projector trains no LM parameters, so the counts agree
    assert f"({adapter_only:,d} trainable parameters)" in card.text


def test_training_leftovers_stay_local_and_metrics_reach_the_card(adapter_folder):
    (adapter_folder / "optimizer.pt").write_bytes(b"\x80\x04")
    (adapter_folder / "checkpoint-10").mkdir()
    (adapter_folder / "all_results.json").write_text(json.dumps({"eval_loss": 1.25, "epoch": 3.0, "train_runtime": 9}))
    (adapter_folder / "training_info.json").write_text(json.dumps({
        "datasets": ["org/shapes"], "training_data": "10k synthetic shape scenes", "license": "apache-2.0",
        "metrics": {"vqa_accuracy": 0.61}, "tags": ["shapes"],
    }))
    (adapter_folder / "trainer_state.json").write_text(json.dumps({
        "global_step": 120, "epoch": 3.0, "best_metric": 1.2,
        "log_history": [{"loss": 2.5, "step": 10}, {"eval_loss": 1.9, "eval_cider": 0.4, "step": 60},
                        {"loss": 1.1, "step": 110}, {"eval_loss": 1.3, "eval_cider": 0.7, "step": 120}],
    }))
    (adapter_folder / "run_config.json").write_text(json.dumps({"dataset": "synthetic", "tasks": "vqa"}))
    result = push_adapter(adapter_folder, "org/my-adapter", dry_run=True)
    leftovers = {"optimizer.pt", "checkpoint-10/", "trainer_state.json", "run_config.json", "all_results.json",
                 "training_info.json"}
    assert leftovers <= set(result.skipped)  # not part of the checkpoint: the card carries what they say
    assert not leftovers & set(result.uploaded)

    info = read_training_info(adapter_folder)
    assert info.metrics == {
        "vqa_accuracy": 0.61, "eval_loss": 1.25, "eval_cider": 0.7, "train_loss_last_logged": 1.1, "best_metric": 1.2
    }
    assert (info.global_step, info.epochs) == (120, 3.0)
    card = ModelCard(result.model_card)
    assert card.data.license == "apache-2.0"
    assert card.data.datasets == ["org/shapes"]
    assert "shapes" in card.data.tags
    assert "| eval_cider | 0.7 |" in card.text and "| vqa_accuracy | 0.61 |" in card.text
    assert "10k synthetic shape scenes" in card.text and "120 optimizer steps, 3 epochs" in card.text
    assert push_adapter(adapter_folder, "org/x", license="mit", dry_run=True).model_card.count("license: mit") == 1

    (adapter_folder / "training_info.json").unlink()
    (adapter_folder / "run_config.json").write_text(json.dumps({"dataset": "synthetic", "tasks": "vqa",
                                                                 "num_train_images": 500, "data_dir": "/home/me"}))
    assert read_training_info(adapter_folder).training_data == "`synthetic` (tasks: vqa; 500 generated training images)"


def test_a_folder_readme_wins_over_the_generated_card(adapter_folder):
    (adapter_folder / "README.md").write_text("---\nlicense: mit\n---\n# Mine\n")
    result = push_adapter(adapter_folder, "org/my-adapter", dry_run=True)
    assert result.model_card.endswith("# Mine\n")


def test_cli_hooks_parse_and_run_a_dry_run(saved, capsys):
    parser = add_push_arguments(argparse.ArgumentParser(prog="hf-vadapter push"))
    args = parser.parse_args([str(saved[0]), "org/my-adapter", "--dry-run", "--private", "--revision", "dev"])
    assert (args.private, args.revision, args.include_base, args.create_pr, args.token) == (True, "dev", False, False, None)
    assert run_push(args) == 0
    printed = capsys.readouterr().out
    assert "Would upload to org/my-adapter@dev" in printed and "base_model_relation: adapter" in printed


def test_quickstart_style_folder_shows_its_evaluation_in_the_card(adapter_folder):
    # The quickstart writes metrics.json (per split) one folder above its adapter; `evaluate` writes a flat one.
    summary = {"metrics": {"test": {"vqa_accuracy": 0.5, "vqa_accuracy_colour": 0.51, "cider": 5.35},
                           "test_heldout": {"vqa_accuracy": 0.4, "vqa_accuracy_colour": 0.45, "cider": 3.74}}}
    (adapter_folder.parent / "metrics.json").write_text(json.dumps(summary))
    card = push_adapter(adapter_folder, "org/my-adapter", dry_run=True).model_card
    assert "| metric | test | test_heldout |" in card
    assert "| VQA accuracy, colour | 51.0% | 45.0% |" in card and "| caption CIDEr | 5.35 | 3.74 |" in card
    assert "`metrics.json`" in card
