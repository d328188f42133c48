"""Bad input, broken files and interrupted saves: each gets a typed, explained error, and no data is lost."""

import textwrap

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hf_vadapter
from conftest import build_model, kill_when_printed, random_image
from hf_vadapter.modeling.adapter_config import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME
from hf_vadapter.modeling.processing_vadapter import IGNORE_INDEX


@pytest.fixture(scope="module")
def saved(tiny_bases, tmp_path_factory):
    model, processor = build_model(*tiny_bases("vit", "llama"), hf_vadapter.MLPProjectorConfig(pool_size=2))
    folder = tmp_path_factory.mktemp("adapter") / "checkpoint"
    model.save_adapter(folder, processor=processor)
    return model, processor, folder


def _copy(folder, tmp_path):
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target


# ------------------------------------------------------------------------------------------------ checkpoints


def test_truncated_safetensors_is_explained(saved, tmp_path):
    _, _, folder = saved
    broken = _copy(folder, tmp_path)
    data = (broken / ADAPTER_WEIGHTS_NAME).read_bytes()
    (broken / ADAPTER_WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(hf_vadapter.CheckpointError, match="truncated or corrupt"):
        hf_vadapter.VisionAdapterForCausalLM.from_adapter_pretrained(broken)


def test_garbage_safetensors_is_explained(saved, tmp_path):
    _, _, folder = saved
    broken = _copy(folder, tmp_path)
    (broken / ADAPTER_WEIGHTS_NAME).write_bytes(b"\x00" * 64)
    with pytest.raises(hf_vadapter.CheckpointError, match="truncated or corrupt"):
        hf_vadapter.VisionAdapterForCausalLM.from_adapter_pretrained(broken)


def test_missing_adapter_files_are_explained(saved, tmp_path):
    _, _, folder = saved
    broken = _copy(folder, tmp_path)
    (broken / ADAPTER_WEIGHTS_NAME).unlink()
    with pytest.raises(hf_vadapter.CheckpointError, match=ADAPTER_WEIGHTS_NAME):
        hf_vadapter.VisionAdapterForCausalLM.from_adapter_pretrained(broken)
    with pytest.raises(hf_vadapter.CheckpointError, match=ADAPTER_CONFIG_NAME):
        hf_vadapter.AdapterConfig.read_dict(tmp_path)


def test_adapter_keys_that_do_not_match_are_explained(saved, tmp_path, tiny_bases):
    _, _, folder = saved
    other, _ = build_model(*tiny_bases("vit", "llama"), hf_vadapter.MLPProjectorConfig(num_layers=1, pool_size=2))
    with pytest.raises(hf_vadapter.CheckpointError, match="unexpected"):
        other.load_vision_adapter(folder)


def test_adapter_for_another_lm_width_is_a_backbone_mismatch(saved, tiny_bases):
    _, _, folder = saved
    gpt2_tower, gpt2_lm = tiny_bases("vit", "gpt2")
    with pytest.raises(hf_vadapter.BackboneMismatchError, match="LM type: adapter trained on llama"):
        hf_vadapter.VisionAdapterForCausalLM.from_adapter_pretrained(folder, text_model_name_or_path=gpt2_lm)


def test_only_safetensors_are_loaded(tmp_path, saved):
    model, _, _ = saved
    pickle_file = tmp_path / "adapter_model.bin"
    torch.save(model.adapter_state_dict(), pickle_file)
    with pytest.raises(hf_vadapter.CheckpointError, match="only .safetensors"):
        model.load_vision_adapter(pickle_file)


def test_checkpoints_written_hold_no_pickle(saved):
    _, _, folder = saved
    for path in folder.iterdir():
        assert path.suffix in {".json", ".safetensors", ".py", ".jinja", ".txt", ".model"}, path.name


def test_sigkill_mid_save_leaves_the_previous_checkpoint_loadable(saved, tmp_path, tiny_bases):
    """A real subprocess is killed with SIGKILL while it writes a new adapter over the old one."""
    model, processor, folder = saved
    target = _copy(folder, tmp_path)
    before = (target / ADAPTER_WEIGHTS_NAME).read_bytes()
    tower, lm = tiny_bases("vit", "llama")
    script = textwrap.dedent(
        f"""
        import time, torch, hf_vadapter
        from hf_vadapter.modeling import modeling_vadapter
        model = hf_vadapter.VisionAdapterForCausalLM.from_vision_text_pretrained(
            {tower!r}, {lm!r}, hf_vadapter.MLPProjectorConfig(pool_size=2))
        real_save = modeling_vadapter.save_safetensors
        def slow_save(tensors, path, **kwargs):
            real_save(tensors, path, **kwargs)
            print("WRITING", flush=True)
            time.sleep(60)  # killed here: the new weights are on disk, the swap has not happened
        modeling_vadapter.save_safetensors = slow_save
        model.save_adapter({str(target)!r})
        """
    )
    kill_when_printed(script, "WRITING", "the saving process")
    assert (target / ADAPTER_WEIGHTS_NAME).read_bytes() == before
    reloaded = hf_vadapter.VisionAdapterForCausalLM.from_adapter_pretrained(target)
    for key, value in model.adapter_state_dict().items():
        assert torch.equal(reloaded.adapter_state_dict()[key], value)


# ------------------------------------------------------------------------------------------------ configs


def test_unknown_adapter_type_lists_the_known_ones():
    with pytest.raises(hf_vadapter.AdapterConfigError, match="Unknown adapter_type 'lora_magic'.*mlp_projector"):
        hf_vadapter.VisionAdapterConfig(adapter_config={"adapter_type": "lora_magic"})


def test_config_from_a_newer_version_says_upgrade():
    newer = {**hf_vadapter.MLPProjectorConfig().to_dict(), "format_version": 99}
    with pytest.raises(hf_vadapter.AdapterConfigError, match="newer hf_vadapter"):
        hf_vadapter.VisionAdapterConfig(adapter_config=newer)
    unknown_field = {**hf_vadapter.MLPProjectorConfig().to_dict(), "hyper_drive": True}
    with pytest.raises(hf_vadapter.AdapterConfigError, match="unknown fields \\['hyper_drive'\\]"):
        hf_vadapter.VisionAdapterConfig(adapter_config=unknown_field)


def test_feature_layers_outside_the_tower_are_refused(tiny_bases):
    with pytest.raises(hf_vadapter.AdapterConfigError, match="tower has 2 layers"):
        build_model(*tiny_bases("vit", "llama"), hf_vadapter.MLPProjectorConfig(feature_layers=[7]))


# ------------------------------------------------------------------------------------------------ inputs


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: torch.zeros(1, 3, 32), "got shape"),
        (lambda: torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "float tensor"),
        (lambda: torch.zeros(1, 1, 32, 32), "expects 3 channels"),
        (lambda: torch.zeros(1, 3, 64, 64), "at 32x32"),
        (lambda: torch.full((1, 3, 32, 32), float("nan")), "NaN"),
    ],
)
def test_bad_pixel_values_are_refused(saved, make, message):
    model, processor, _ = saved
    inputs = processor(images=[random_image(0)], text=["what?"])
    inputs["pixel_values"] = make()
    with pytest.raises(hf_vadapter.InvalidImageError, match=message):
        model(**inputs)


def test_placeholders_without_images_are_refused(saved):
    model, processor, _ = saved
    inputs = processor(text=["<image> what?"])
    with pytest.raises(hf_vadapter.ImageTokenMismatchError, match="placeholder tokens but the images give 0"):
        model(**inputs)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prompts=st.lists(st.text(alphabet="abc xyz?.<>image", min_size=0, max_size=40), min_size=1, max_size=3),
    images_per_prompt=st.lists(st.integers(0, 2), min_size=3, max_size=3),
    with_targets=st.booleans(),
    max_length=st.one_of(st.none(), st.integers(1, 80)),
)
def test_processor_raises_only_documented_errors(saved, prompts, images_per_prompt, with_targets, max_length):
    _, processor, _ = saved
    images = [[random_image(i) for i in range(n)] for n in images_per_prompt[: len(prompts)]]
    targets = ["red circle."] * len(prompts) if with_targets else None
    try:
        batch = processor(images=images, text=prompts, text_target=targets, max_length=max_length)
    except hf_vadapter.VisionAdapterError:
        return
    ids, labels = batch["input_ids"], batch.get("labels")
    image_positions = ids == processor.image_token_id
    num_images = sum(len(per) for per in images)
    assert int(image_positions.sum()) == num_images * processor.num_image_tokens
    if labels is not None:
        supervised = labels != IGNORE_INDEX
        assert not supervised[image_positions].any()
        assert not supervised[batch["attention_mask"] == 0].any()
    if max_length is not None:
        assert ids.shape[1] <= max_length


def test_batched_generation_of_64_mixed_prompts_matches_single_runs(saved):
    model, processor, _ = saved
    words = "what color is the circle how many shapes are there describe the image".split()
    prompts = [" ".join(words[: 1 + (i * 7) % len(words)]) + "?" for i in range(64)]
    images = [random_image(i % 5) for i in range(64)]
    settings_ = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False)
    batched = model.generate(**processor(images=images, text=prompts), **settings_)[:, -4:]
    for i in range(64):
        single = model.generate(**processor(images=[images[i]], text=[prompts[i]]), **settings_)[:, -4:]
        assert torch.equal(single[0], batched[i]), i
