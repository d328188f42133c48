"""Describe, then answer: the processor's `describe_prompt` and `context_template` (saved, loaded, remote code),
the training data transform, and generation that describes each image once and answers after its description."""

import json
import logging

import pytest
import torch
from transformers import AutoProcessor

import hf_vadapter
from conftest import build_model, random_image, run_without_hf_vadapter
from hf_vadapter.data.schema import CAPTION_PROMPT
from hf_vadapter.data.synthetic import build_synthetic_dataset
from hf_vadapter.evaluation.generation import answer, describe_first, generate_predictions
from hf_vadapter.modeling.errors import InvalidDatasetError
from hf_vadapter.training import run_training
from hf_vadapter.training.describe_then_answer import (
    describe_prompt_of,
    reference_descriptions,
    with_reference_descriptions,
)
from test_training_helpers import arguments, bases  # noqa: F401

DESCRIBE = "Describe the image."


@pytest.fixture(scope="module")
def pair(tiny_bases):
    tower, lm = tiny_bases("vit", "llama")
    model, processor = build_model(tower, lm, hf_vadapter.MLPProjectorConfig(pool_size=2))
    processor.describe_prompt = DESCRIBE
    return model.eval(), processor


# ------------------------------------------------------------------------------------------------ processor


def test_with_context_follows_the_template_and_skips_empty_context(pair):
    _, processor = pair
    assert processor.with_context("What color is the star?", " a red star. ") == (
        "Context: a red star.\nWhat color is the star?"
    )
    assert processor.with_context("What color is the star?", "  ") == "What color is the star?"
    assert processor.is_describe_prompt(" describe the image. ")
    assert not processor.is_describe_prompt("What color is the star?")


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"describe_prompt": "  "}, "non-empty prompt"),
        ({"describe_prompt": "<image> describe"}, "image placeholder"),
        ({"context_template": "{prompt}"}, "must hold"),
        ({"context_template": "{context} {image}\n{prompt}"}, "does not format"),
    ],
)
def test_bad_context_settings_are_refused(pair, settings, message):
    _, processor = pair
    with pytest.raises(ValueError, match=message):
        hf_vadapter.VisionAdapterProcessor(processor.image_processor, processor.tokenizer, **settings)


def test_settings_round_trip_through_save_and_remote_code(pair, tmp_path):
    model, processor = pair
    template = "Seen: {context}\nQ: {prompt}"
    custom = hf_vadapter.VisionAdapterProcessor(
        processor.image_processor,
        processor.tokenizer,
        num_image_tokens=processor.num_image_tokens,
        describe_prompt="Write a caption.",
        context_template=template,
    )
    model.save_pretrained(tmp_path / "adapter", processor=custom)
    saved = json.loads((tmp_path / "adapter" / "processor_config.json").read_text())
    assert (saved["describe_prompt"], saved["context_template"]) == ("Write a caption.", template)
    loaded = AutoProcessor.from_pretrained(tmp_path / "adapter", trust_remote_code=True)
    assert (loaded.describe_prompt, loaded.context_template) == ("Write a caption.", template)
    result = run_without_hf_vadapter(
        f"""
        from transformers import AutoProcessor
        processor = AutoProcessor.from_pretrained({str(tmp_path / "adapter")!r}, trust_remote_code=True)
        print(json.dumps({{"describe": processor.describe_prompt, "prompt": processor.with_context("Why?", "a dog.")}}))
        """
    )
    assert result == {"describe": "Write a caption.", "prompt": "Seen: a dog.\nQ: Why?"}


def test_processors_saved_without_the_settings_load_with_describing_off(pair, tmp_path):
    model, processor = pair
    model.save_pretrained(tmp_path / "adapter", processor=processor)
    config_file = tmp_path / "adapter" / "processor_config.json"
    values = json.loads(config_file.read_text())
    del values["describe_prompt"], values["context_template"]  # as an older checkpoint wrote it
    config_file.write_text(json.dumps(values))
    loaded = hf_vadapter.VisionAdapterProcessor.from_pretrained(tmp_path / "adapter")
    assert loaded.describe_prompt is None
    assert loaded.with_context("Why?", "a dog.") == "Context: a dog.\nWhy?"


# ------------------------------------------------------------------------------------------------ generation


class RecordingGenerate:
    """A stand-in for generation: answers `<prompt>@<image_id>` and records every call's prompts."""

    def __init__(self):
        self.calls = []

    def __call__(self, rows, describing):
        self.calls.append([row["prompt"] for row in rows])
        return [f"{row['prompt'][-12:]}@{row.get('image_id')}" for row in rows]


def test_describe_first_describes_each_image_once_and_keeps_row_order(pair):
    _, processor = pair
    rows = [
        {"image": "a", "image_id": "a", "prompt": "What color?"},
        {"image": "b", "image_id": "b", "prompt": DESCRIBE},
        {"image": "a", "image_id": "a", "prompt": "What shape?"},
        {"image": None, "image_id": "", "prompt": "Tell a joke."},
        {"image": "b", "image_id": "b", "prompt": "How many?"},
    ]
    generate = RecordingGenerate()
    answers = describe_first(processor, rows, generate)
    descriptions, questions = generate.calls
    assert descriptions == [DESCRIBE, DESCRIBE]  # images a and b, once each
    assert questions == [
        processor.with_context("What color?", f"{DESCRIBE[-12:]}@a"),
        processor.with_context("What shape?", f"{DESCRIBE[-12:]}@a"),
        "Tell a joke.",  # no image: no context
        processor.with_context("How many?", f"{DESCRIBE[-12:]}@b"),
    ]
    assert answers[1] == f"{DESCRIBE[-12:]}@b"  # the description row's answer is the description itself
    assert answers[0] == "\nWhat color?@a" and answers[3] == "Tell a joke.@"


def test_a_description_asked_in_other_words_gets_no_context(pair):
    _, processor = pair
    generate = RecordingGenerate()
    rows = [{"image": "a", "image_id": "a", "prompt": " describe the image. "}]
    describe_first(processor, rows, generate)
    assert generate.calls == [[DESCRIBE], [" describe the image. "]]


def test_describe_first_without_describe_prompt_is_one_plain_pass(pair, tiny_bases):
    tower, lm = tiny_bases("vit", "llama")
    plain = hf_vadapter.VisionAdapterProcessor.from_vision_text_pretrained(tower, lm, num_image_tokens=4)
    generate = RecordingGenerate()
    rows = [{"image": "a", "image_id": "a", "prompt": "What color?"}]
    assert describe_first(plain, rows, generate) == ["What color?@a"]
    assert generate.calls == [["What color?"]]


def test_generation_equals_the_two_steps_written_by_hand_and_batches_like_single_rows(pair):
    """Batched == single rows == the two generations by hand, these without the KV cache (generation uses it)."""
    model, processor = pair
    images = [random_image(0), random_image(1)]
    rows = [
        {"image": images[0], "image_id": "0", "prompt": "What color is it?"},
        {"image": images[1], "image_id": "1", "prompt": DESCRIBE},
        {"image": images[1], "image_id": "1", "prompt": "What shape is it?"},
        {"image": images[0], "image_id": "0", "prompt": "How many?"},
    ]
    settings = dict(max_new_tokens=5, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id, use_cache=False)
    by_hand = []
    for row in rows:
        inputs = processor(images=row["image"], text=DESCRIBE)
        description = processor.decode(
            model.generate(**inputs, **settings)[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        ).strip()
        if row["prompt"] == DESCRIBE:
            by_hand.append(description)
            continue
        inputs = processor(images=row["image"], text=processor.with_context(row["prompt"], description))
        new = model.generate(**inputs, **settings)[0, inputs["input_ids"].shape[1] :]
        by_hand.append(processor.decode(new, skip_special_tokens=True).strip())
    batched = generate_predictions(model, processor, rows, batch_size=4, max_new_tokens=5, progress=False)
    single = generate_predictions(model, processor, rows, batch_size=1, max_new_tokens=5, progress=False)
    assert batched == single == by_hand
    pairs = answer(model, processor, [row["image"] for row in rows], [row["prompt"] for row in rows], **settings)
    assert pairs == by_hand


# ------------------------------------------------------------------------------------------------ training data


def test_reference_descriptions_go_before_every_question_of_their_image(pair):
    _, processor = pair
    dataset = build_synthetic_dataset("train", 3, image_size=32, seed=0)
    captions = reference_descriptions(dataset)
    assert len(captions) == 3
    assert describe_prompt_of(dataset) == CAPTION_PROMPT
    contextual = with_reference_descriptions(dataset, processor)
    for before, after in zip(dataset.select_columns(["task", "prompt", "image_id"]), contextual):
        if before["task"] == "caption":
            assert after["prompt"] == before["prompt"]
        else:
            assert after["prompt"] == f"Context: {captions[before['image_id']]}\n{before['prompt']}"
    assert contextual["target"] == dataset["target"] and contextual["image_id"] == dataset["image_id"]


def test_rows_without_a_caption_keep_their_prompt_and_are_counted(pair, caplog):
    _, processor = pair
    dataset = build_synthetic_dataset("train", 2, image_size=32, seed=0)
    first_image = dataset[0]["image_id"]
    without = dataset.filter(lambda task, image_id: not (task == "caption" and image_id == first_image),
                             input_columns=["task", "image_id"])  # fmt: skip
    with caplog.at_level(logging.WARNING):
        contextual = with_reference_descriptions(without, processor)
    unchanged = [row["prompt"] for row in contextual if row["image_id"] == first_image]
    assert unchanged == [row["prompt"] for row in without if row["image_id"] == first_image]
    assert f"{len(unchanged)} of {len(without)} rows have no caption row" in caplog.text


def test_data_without_captions_is_refused():
    dataset = build_synthetic_dataset("train", 2, image_size=32, seed=0, tasks=("vqa",))
    with pytest.raises(InvalidDatasetError, match="needs caption rows"):
        describe_prompt_of(dataset)


def test_training_with_describe_then_answer_saves_the_describe_prompt(bases, tmp_path):  # noqa: F811
    run = run_training(*arguments(bases, tmp_path / "run", describe_then_answer=True, max_steps=2))
    trained_prompts = run.trainer.train_dataset["prompt"]
    assert sum(prompt.startswith("Context: ") for prompt in trained_prompts) == 10  # 2 images x 5 questions
    saved = json.loads((tmp_path / "run" / "processor_config.json").read_text())
    assert saved["describe_prompt"] == CAPTION_PROMPT
    loaded = AutoProcessor.from_pretrained(tmp_path / "run", trust_remote_code=True)
    assert loaded.describe_prompt == CAPTION_PROMPT
    with torch.no_grad():
        rows = build_synthetic_dataset("test", 1, image_size=32, seed=0)
        predictions = generate_predictions(run.trainer.model, loaded, list(rows), max_new_tokens=3, progress=False)
    assert len(predictions) == len(rows)
