"""Training that used to run on silently: a non-finite loss, NaN adapters, resuming another run's checkpoint, and
data that is empty, image-less or corrupt."""

import logging
import shutil

import pytest
import torch
from transformers import TrainerCallback

import hf_vadapter
from conftest import build_model, random_image
from hf_vadapter.data.schema import caption_example, examples_to_dataset, png_image_value
from hf_vadapter.modeling.adapter_config import ADAPTER_WEIGHTS_NAME
from hf_vadapter.modeling.checkpoint_files import MANIFEST_NAME
from hf_vadapter.modeling.safe_io import load_safetensors, save_safetensors
from hf_vadapter.training import run_training
from hf_vadapter.training.data import load_splits
from test_training_helpers import arguments, bases  # noqa: F401
from test_reliability import saved  # noqa: F401  (module-scoped: a saved pool-2 MLP adapter on llama)

# ------------------------------------------------------------------------------------------------ non-finite values


class PoisonAdapter(TrainerCallback):
    """Make the adapter's weights NaN when step `step` begins, as a diverging run would."""

    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 == self.step:
            with torch.no_grad():
                next(model.adapter.parameters()).fill_(float("nan"))


def test_training_stops_at_the_first_non_finite_loss(bases, tmp_path):
    output = tmp_path / "run"
    args = arguments(bases, output, max_steps=6, save_strategy="steps", save_steps=2)
    with pytest.raises(hf_vadapter.NonFiniteError, match="training loss is nan at step 3"):
        run_training(*args, callbacks=[PoisonAdapter(step=3)])
    assert sorted(path.name for path in output.glob("checkpoint-*")) == ["checkpoint-2"]
    for name, tensor in load_safetensors(output / "checkpoint-2" / ADAPTER_WEIGHTS_NAME).items():
        assert torch.isfinite(tensor).all(), name
    assert not (output / ADAPTER_WEIGHTS_NAME).exists()  # no final adapter was saved


def test_save_adapter_refuses_non_finite_weights_and_keeps_the_checkpoint(saved, tmp_path, tiny_bases):
    _, _, folder = saved
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    before = {path.name: path.read_bytes() for path in target.iterdir() if path.is_file()}
    model, processor = build_model(*tiny_bases("vit", "llama"), hf_vadapter.MLPProjectorConfig(pool_size=2))
    with torch.no_grad():
        model.adapter.mlp[0].weight[0, :3] = float("inf")
    with pytest.raises(hf_vadapter.NonFiniteError, match="adapter.mlp.0.weight \\(3 values\\)"):
        model.save_adapter(target, processor=processor)
    assert {path.name: path.read_bytes() for path in target.iterdir() if path.is_file()} == before


def test_loading_non_finite_weights_is_refused(saved, tmp_path):
    _, _, folder = saved
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    weights = load_safetensors(target / ADAPTER_WEIGHTS_NAME)
    weights["adapter.mlp.2.bias"] = torch.full_like(weights["adapter.mlp.2.bias"], float("nan"))
    save_safetensors(weights, target / ADAPTER_WEIGHTS_NAME)
    (target / MANIFEST_NAME).unlink()  # a hand-made file: the manifest would refuse it before the finiteness check
    with pytest.raises(hf_vadapter.NonFiniteError, match="Not loading the adapter.*adapter.mlp.2.bias"):
        hf_vadapter.VisionAdapterForCausalLM.from_adapter_pretrained(target)


# ------------------------------------------------------------------------------------------------ resume


@pytest.fixture
def checkpointed(bases, tmp_path):
    """An output_dir holding checkpoint-2 of a run with pool_size 2 on the llama LM."""
    output = tmp_path / "run"
    adapter_config = {"num_layers": 1, "pool_size": 2}
    run_training(
        *arguments(bases, output, adapter_config=adapter_config, max_steps=2, save_strategy="steps", save_steps=2)
    )
    assert (output / "checkpoint-2").is_dir()
    return output


def test_resume_with_another_pool_size_is_refused(bases, checkpointed):
    args = arguments(bases, checkpointed, adapter_config={"num_layers": 1, "pool_size": 1}, max_steps=4)
    with pytest.raises(hf_vadapter.AdapterConfigError, match="another adapter config.*pool_size: 2 vs 1"):
        run_training(*args, resume_from_checkpoint=True)


def test_resume_on_another_lm_family_is_refused(tiny_bases, checkpointed):
    gpt2 = tiny_bases("vit", "gpt2", chat_template=True)
    args = arguments(gpt2, checkpointed, adapter_config={"num_layers": 1, "pool_size": 2}, max_steps=4)
    with pytest.raises(hf_vadapter.BackboneMismatchError, match="LM type: adapter trained on llama"):
        run_training(*args, resume_from_checkpoint=True)


def test_resume_with_the_same_settings_still_works(bases, checkpointed):
    args = arguments(bases, checkpointed, adapter_config={"num_layers": 1, "pool_size": 2}, max_steps=4)
    assert run_training(*args, resume_from_checkpoint=True).trainer.state.global_step == 4


# ------------------------------------------------------------------------------------------------ data


def _saved_dataset(tmp_path, images):
    rows = [caption_example(image, ["a red circle."], f"row-{i}", f"image-{i}") for i, image in enumerate(images)]
    path = tmp_path / "data"
    examples_to_dataset(rows).save_to_disk(str(path))
    return str(path)


def test_empty_training_data_is_refused_up_front(bases, tmp_path):
    _, data_args, _ = arguments(bases, tmp_path / "run", dataset=_saved_dataset(tmp_path, []))
    with pytest.raises(hf_vadapter.InvalidDatasetError, match="saved with no rows"):
        load_splits(data_args)


def test_training_data_filtered_to_nothing_is_refused_up_front(bases, tmp_path):
    images = [png_image_value(random_image(0))]
    _, data_args, _ = arguments(bases, tmp_path / "run", dataset=_saved_dataset(tmp_path, images), tasks="vqa")
    with pytest.raises(hf_vadapter.InvalidDatasetError, match="training data is empty.*tasks=\\('vqa',\\)"):
        load_splits(data_args)


def test_rows_without_images_are_counted_in_a_warning(bases, tmp_path, caplog):
    images = [png_image_value(random_image(0)), None, png_image_value(random_image(1)), None]
    _, data_args, _ = arguments(bases, tmp_path / "run", dataset=_saved_dataset(tmp_path, images))
    with caplog.at_level(logging.WARNING, logger="hf_vadapter.training.data"):
        load_splits(data_args)
    assert "2 of 4 training rows have no image" in caplog.text


def test_a_corrupt_image_names_its_row(bases, tmp_path):
    good = png_image_value(random_image(0))
    corrupt = {"bytes": good["bytes"][: len(good["bytes"]) // 2], "path": None}
    dataset = _saved_dataset(tmp_path, [good, good, corrupt, good])
    args = arguments(bases, tmp_path / "run", dataset=dataset, max_steps=1)
    with pytest.raises(hf_vadapter.InvalidDatasetError, match="row 'row-2'.*cannot be read"):
        run_training(*args)
