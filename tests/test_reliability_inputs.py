"""Bad inputs and broken configs that used to pass silently or fail with raw errors: each gets a typed error."""

import io
import json
import shutil

import pytest
import torch
from PIL import Image, ImageOps

import hf_vadapter
from conftest import build_model, random_image
from hf_vadapter.modeling import modeling_vadapter
from hf_vadapter.modeling.adapter_config import ADAPTER_CONFIG_NAME
from hf_vadapter.modeling.checkpoint_files import MANIFEST_NAME
from test_reliability import saved  # noqa: F401  (module-scoped: a saved pool-2 MLP adapter on llama)


@pytest.fixture
def copy(saved, tmp_path):
    """A copy of the saved checkpoint to edit by hand. Its manifest is removed, as the manifest check's error advises
    for hand-edited files, so these tests reach the config checks behind it."""
    target = tmp_path / "copy"
    shutil.copytree(saved[2], target)
    (target / MANIFEST_NAME).unlink()
    return target


def _edit_json(path, edit):
    values = json.loads(path.read_text())
    edit(values)
    path.write_text(json.dumps(values))


# ------------------------------------------------------------------------------------------------ config types


@pytest.mark.parametrize(
    "config_class, field, value, expected",
    [
        (hf_vadapter.MLPProjectorConfig, "feature_norm", "no", "bool"),
        (hf_vadapter.MLPProjectorConfig, "pool_size", "2", "int"),
        (hf_vadapter.MLPProjectorConfig, "num_layers", 2.0, "int"),
        (hf_vadapter.MLPProjectorConfig, "input_norm", 1, "bool"),
        (hf_vadapter.MLPProjectorConfig, "feature_layers", ["-1"], "a list of int"),
        (hf_vadapter.MLPProjectorConfig, "vision_model_name_or_path", 7, "str, or None"),
        (hf_vadapter.PerceiverResamplerConfig, "num_latents", True, "int"),
        (hf_vadapter.LlamaAdapterV2Config, "prompt_init_std", "1.0", "float"),
        (hf_vadapter.PaLM2VAdapterConfig, "tiny_lm_config", "llama", "a dict, or None"),
        (hf_vadapter.PaLM2VAdapterConfig, "stage", "1", "int"),
        (hf_vadapter.EPALMConfig, "injection_layer", "3", "int, or None"),
    ],
)
def test_config_fields_of_the_wrong_type_are_refused(config_class, field, value, expected):
    base = config_class(stage=1) if config_class is hf_vadapter.PaLM2VAdapterConfig else config_class()
    values = {**base.to_dict(), field: value}
    message = f"{config_class.__name__}.{field} must be {expected}, got"
    with pytest.raises(hf_vadapter.AdapterConfigError, match=message):
        hf_vadapter.VisionAdapterConfig(adapter_config=values)


def test_config_fields_of_the_right_type_still_load():
    values = {**hf_vadapter.LlamaAdapterV2Config().to_dict(), "prompt_init_std": 2, "num_prompt_layers": None}
    config = hf_vadapter.VisionAdapterConfig(adapter_config=values)
    assert config.adapter.prompt_init_std == 2


def test_feature_norm_no_in_a_saved_checkpoint_is_refused(copy):
    _edit_json(copy / "config.json", lambda values: values["adapter_config"].update(feature_norm="no"))
    with pytest.raises(hf_vadapter.AdapterConfigError, match="feature_norm must be bool, got 'no'"):
        hf_vadapter.VisionAdapterForCausalLM.from_adapter_pretrained(copy)


@pytest.mark.parametrize("entry", ["adapter_config", "vision_config", "text_config"])
def test_config_json_missing_an_entry_is_refused(copy, entry):
    _edit_json(copy / "config.json", lambda values: values.pop(entry))
    with pytest.raises(hf_vadapter.AdapterConfigError, match=f"has no \\['{entry}'\\]"):
        hf_vadapter.VisionAdapterForCausalLM.from_adapter_pretrained(copy)


def test_empty_config_json_is_explained(copy):
    (copy / "config.json").write_bytes(b"")
    with pytest.raises(hf_vadapter.CheckpointError, match="not valid JSON.*empty or truncated"):
        hf_vadapter.VisionAdapterForCausalLM.from_adapter_pretrained(copy)


def test_edited_adapter_config_file_must_agree_with_config_json(copy):
    _edit_json(copy / ADAPTER_CONFIG_NAME, lambda values: values.update(pool_size=1))
    with pytest.raises(hf_vadapter.CheckpointError, match="disagree.*pool_size: 1 vs 2"):
        hf_vadapter.VisionAdapterForCausalLM.from_adapter_pretrained(copy)


def test_deleted_adapter_config_file_is_refused(copy):
    (copy / ADAPTER_CONFIG_NAME).unlink()
    with pytest.raises(hf_vadapter.CheckpointError, match=f"has no {ADAPTER_CONFIG_NAME}"):
        hf_vadapter.VisionAdapterForCausalLM.from_adapter_pretrained(copy)


def test_pickle_only_folder_says_only_safetensors_are_read(saved, tmp_path):
    model = saved[0]
    folder = tmp_path / "pickled"
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(hf_vadapter.CheckpointError, match="only safetensors"):
        hf_vadapter.VisionAdapterForCausalLM.from_pretrained(folder)


# ------------------------------------------------------------------------------------------------ images


def _pixels(processor, image):
    return processor(images=[image], text=["what?"])["pixel_values"]


def test_16_bit_and_float_images_are_scaled_by_their_range(saved):
    processor = saved[1]
    gray = Image.linear_gradient("L").resize((40, 48))  # 0..255
    eight_bit = _pixels(processor, gray)
    sixteen_bit = Image.new("I;16", gray.size)
    sixteen_bit.putdata([value * 257 for value in gray.getdata()])  # 0..65535
    floats = gray.convert("F").point(lambda value: value / 255.0)  # 0..1
    for image in (sixteen_bit, floats):
        torch.testing.assert_close(_pixels(processor, image), eight_bit, atol=2 * 2 / 255, rtol=0)


def test_exif_orientation_is_applied(saved):
    processor = saved[1]
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    random_image(3).save(buffer, format="PNG", exif=exif)
    stored = Image.open(io.BytesIO(buffer.getvalue()))
    upright = ImageOps.exif_transpose(stored)
    assert upright.size == (48, 40)
    assert torch.equal(_pixels(processor, stored), _pixels(processor, upright))


def test_huge_finite_pixel_values_are_refused(saved):
    model, processor, _ = saved
    inputs = processor(images=[random_image(0)], text=["what?"])
    inputs["pixel_values"] = inputs["pixel_values"] * 1e30
    with pytest.raises(hf_vadapter.InvalidImageError, match="huge values"):
        model(**inputs)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f[..., :16], "Dv=32"),  # width
        (lambda f: f[:, 0], "shape \\(1, 1, 16, 32\\)"),  # rank
        (lambda f: f[:, :, :, :9], "S=16 tokens"),  # token count
        (lambda f: torch.full_like(f, float("nan")), "NaN or infinite"),
    ],
)
def test_bad_image_features_are_refused(saved, change, message):
    model, processor, _ = saved
    inputs = processor(images=[random_image(0)], text=["what?"])
    features = model.get_vision_features(inputs.pop("pixel_values"))
    with pytest.raises(hf_vadapter.InvalidImageError, match=message):
        model(**inputs, image_features=change(features))


def test_image_features_and_pixel_values_together_are_refused(saved):
    model, processor, _ = saved
    inputs = processor(images=[random_image(0)], text=["what?"])
    features = model.get_image_features(inputs["pixel_values"])
    with pytest.raises(hf_vadapter.InvalidImageError, match="not both"):
        model(**inputs, image_features=features)


def test_two_frame_video_with_the_mlp_projector_is_explained(saved):
    model, processor, _ = saved
    inputs = processor(videos=[[random_image(0), random_image(1)]], text=["what?"])
    with pytest.raises(hf_vadapter.ImageTokenMismatchError, match="one frame at a time.*separate images"):
        model(**inputs)


# ------------------------------------------------------------------------------------------------ text


@pytest.mark.parametrize(
    "text, message",
    [
        ("a lone \ud800 surrogate", "not valid Unicode"),
        (["fine", None], "text\\[1\\] is NoneType"),
        (5, "got int"),
        ({"a": 1}, "got dict"),
    ],
)
def test_prompts_that_are_not_strings_are_refused(saved, text, message):
    processor = saved[1]
    with pytest.raises(hf_vadapter.InvalidPromptError, match=message):
        processor(text=text)


def test_image_placeholder_in_a_training_target_is_refused(saved):
    processor = saved[1]
    with pytest.raises(hf_vadapter.InvalidPromptError, match="text_target\\[0\\] holds the image placeholder"):
        processor(images=[random_image(0)], text=["what?"], text_target=["a <image> circle."])


def test_labels_of_the_wrong_length_are_refused(saved):
    model, processor, _ = saved
    inputs = processor(images=[random_image(0)], text=["what?"], text_target=["red."])
    inputs["labels"] = inputs["labels"][:, 1:]
    with pytest.raises(hf_vadapter.InvalidInputError, match="labels have shape"):
        model(**inputs)


def test_attention_mask_values_other_than_0_and_1_are_refused(saved):
    model, processor, _ = saved
    inputs = processor(images=[random_image(0)], text=["what?"])
    inputs["attention_mask"] = inputs["attention_mask"] * 2
    with pytest.raises(hf_vadapter.InvalidInputError, match="other than 0 and 1"):
        model(**inputs)


def test_prompt_longer_than_a_gpt2_context_is_refused(tiny_bases):
    model, processor = build_model(*tiny_bases("vit", "gpt2"), hf_vadapter.MLPProjectorConfig(pool_size=2))
    inputs = processor(images=[random_image(0)], text=["red " * 300])
    assert inputs["input_ids"].shape[1] > 256  # the tiny GPT-2 has n_positions=256
    with pytest.raises(hf_vadapter.InvalidPromptError, match="learned positions for 256 only"):
        model(**inputs)


def test_llama_prompt_past_its_context_warns(saved, monkeypatch):
    model, processor, _ = saved
    warnings = []
    monkeypatch.setattr(modeling_vadapter.logger, "warning_once", warnings.append)
    model(**processor(images=[random_image(0)], text=["what?"]))
    assert warnings == []
    model(**processor(images=[random_image(0)], text=["red " * 300]))
    assert len(warnings) == 1 and "past the LM's max_position_embeddings=256" in warnings[0]
