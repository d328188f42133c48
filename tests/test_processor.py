"""The processor: placeholder expansion, label masking, truncation that spares placeholders, chat templates."""

import pytest
import torch
from PIL import Image

import hf_vadapter
from conftest import build_model, random_image
from hf_vadapter.modeling.processing_vadapter import IGNORE_INDEX


@pytest.fixture(scope="module")
def processor(tiny_bases):
    _, processor = build_model(*tiny_bases("vit", "llama"), hf_vadapter.MLPProjectorConfig())
    return processor


@pytest.fixture(scope="module")
def chat_processor(tiny_bases):
    _, processor = build_model(*tiny_bases("vit", "llama", chat_template=True), hf_vadapter.MLPProjectorConfig())
    return processor


def test_each_placeholder_expands_to_num_image_tokens(processor):
    batch = processor(images=[[random_image(0), random_image(1)]], text=["<image> and <image> differ how?"])
    image_id = processor.image_token_id
    assert (batch["input_ids"] == image_id).sum() == 2 * processor.num_image_tokens
    assert batch["pixel_values"].shape[0] == 2


@pytest.mark.parametrize("placement", ["start", "end"])
def test_image_placement_puts_images_before_or_after_a_prompt_without_placeholder(tiny_bases, tmp_path, placement):
    _, processor = build_model(*tiny_bases("vit", "llama"), hf_vadapter.MLPProjectorConfig())
    processor.image_placement = placement
    processor.save_pretrained(tmp_path)
    processor = hf_vadapter.VisionAdapterProcessor.from_pretrained(tmp_path)
    assert processor.image_placement == placement
    batch = processor(images=[random_image(0)], text=["describe the image."], text_target=["a red circle."])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0]
    image = [i for i, token in enumerate(ids) if token == processor.image_token_id]
    text = processor.tokenizer("describe the image.", add_special_tokens=False)["input_ids"]
    text_start = next(i for i in range(len(ids)) if ids[i : i + len(text)] == text)
    assert image == list(range(image[0], image[0] + processor.num_image_tokens))  # one contiguous block
    if placement == "start":
        assert image[-1] < text_start
    else:  # after the prompt's text, right before the supervised target
        assert image[0] >= text_start + len(text)
        assert (labels[image[-1] + 1 :] != IGNORE_INDEX).all()


def test_unknown_image_placement_is_refused(tiny_bases):
    _, processor = build_model(*tiny_bases("vit", "llama"), hf_vadapter.MLPProjectorConfig())
    with pytest.raises(ValueError, match="image_placement must be one of"):
        hf_vadapter.VisionAdapterProcessor(processor.image_processor, processor.tokenizer, image_placement="middle")


def test_placeholder_count_mismatch_is_a_typed_error(processor):
    with pytest.raises(hf_vadapter.ImageTokenMismatchError, match="2 `<image>` placeholders but 1 images"):
        processor(images=[random_image(0)], text=["<image><image> what?"])
    with pytest.raises(hf_vadapter.ImageTokenMismatchError, match="2 prompts but 1 image"):
        processor(images=[random_image(0)], text=["a", "b"])


def test_labels_supervise_only_the_target_and_eos(processor):
    batch = processor(images=[random_image(0)] * 2, text=["what color?", "describe the image please."],
                      text_target=["red.", "a red circle on the left."])
    for row in range(2):
        labels, ids, mask = batch["labels"][row], batch["input_ids"][row], batch["attention_mask"][row]
        supervised = labels != IGNORE_INDEX
        assert not supervised[ids == processor.image_token_id].any()
        assert not supervised[mask == 0].any()
        target = processor.tokenizer(["red.", "a red circle on the left."][row], add_special_tokens=False)["input_ids"]
        assert labels[supervised].tolist() == target + [processor.tokenizer.eos_token_id]
        assert supervised[-len(target) - 1 :].all()


def test_truncation_drops_text_never_placeholders(processor):
    long_prompt = "what color is the circle? " * 20
    batch = processor(images=[random_image(0)], text=[long_prompt], text_target=["red."], max_length=30)
    ids = batch["input_ids"][0]
    assert ids.shape[0] == 30
    assert (ids == processor.image_token_id).sum() == processor.num_image_tokens
    assert (batch["labels"][0] != IGNORE_INDEX).sum() >= 1


def test_truncation_that_cannot_fit_the_image_is_refused(processor):
    with pytest.raises(hf_vadapter.InvalidPromptError, match="cannot hold"):
        processor(images=[random_image(0)], text=["hi"], max_length=processor.num_image_tokens)


def test_left_padding_and_attention_mask(processor):
    batch = processor(images=[random_image(0)] * 2, text=["a", "a much longer prompt than the first one"])
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1
    assert batch["attention_mask"][1].all()


def test_chat_template_wraps_the_prompt_as_a_user_turn(chat_processor):
    batch = chat_processor(images=[random_image(0)], text=["what color?"], text_target=["red."])
    text = chat_processor.tokenizer.decode(batch["input_ids"][0][batch["attention_mask"][0] == 1])
    assert text.startswith("<|user|>") and "<|assistant|>red." in text


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "1"])
def test_image_modes_are_converted_to_rgb(processor, mode):
    image = random_image(3).convert(mode)
    batch = processor(images=[image], text=["what?"])
    assert batch["pixel_values"].shape[1] == 3 and torch.isfinite(batch["pixel_values"]).all()


def test_empty_and_huge_images_are_refused(processor):
    with pytest.raises(hf_vadapter.InvalidImageError, match="empty"):
        processor(images=[Image.new("RGB", (0, 5))], text=["what?"])
    with pytest.raises(hf_vadapter.InvalidImageError, match="pixel limit"):
        processor(images=[Image.new("1", (9000, 9000))], text=["what?"])


def test_empty_prompt_without_image_is_refused(processor):
    with pytest.raises(hf_vadapter.InvalidPromptError, match="empty"):
        processor(text=["   "])


def test_videos_become_frames_tensor(processor):
    videos = [[random_image(i) for i in range(3)], [random_image(i + 5) for i in range(3)]]
    batch = processor(videos=videos, text=["what happens?", "<image> what moves?"])
    assert batch["pixel_values"].shape[:2] == (2, 3)
    assert (batch["input_ids"] == processor.image_token_id).sum() == 2 * processor.num_image_tokens


def test_text_only_prompts_with_cached_features_keep_placeholders(processor):
    batch = processor(text=["<image>what color?"])
    assert (batch["input_ids"] == processor.image_token_id).sum() == processor.num_image_tokens
    assert "pixel_values" not in batch


def test_generation_from_cached_features_equals_generation_from_pixels(tiny_bases):
    model, processor = build_model(*tiny_bases("dinov2", "qwen2"), hf_vadapter.MLPProjectorConfig(pool_size=2))
    images = [random_image(0), random_image(1)]
    from_pixels = processor(images=images, text=["what color?", "describe it."])
    features = model.get_vision_features(from_pixels["pixel_values"])
    from_cache = processor(text=["<image>\nwhat color?", "<image>\ndescribe it."])
    assert torch.equal(from_cache["input_ids"], from_pixels["input_ids"])
    settings = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False)
    expected = model.generate(**from_pixels, **settings)
    for use_cache in (True, False):
        got = model.generate(**from_cache, image_features=features, use_cache=use_cache, **settings)
        assert torch.equal(got, expected)
