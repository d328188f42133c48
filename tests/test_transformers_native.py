"""The calls a transformers/PEFT user writes on day one, written that way: chat messages with images, the
image-text-to-text pipeline, LoRA on the LM, and the `*ForCausalLM` contract (cache, labels, embeddings, features).

Models are tiny random bases saved to a tmp folder; the adapter folder is loaded back through the Auto classes with
`trust_remote_code=True`.
"""

import logging
import warnings

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoProcessor, pipeline
from transformers.utils import logging as hf_logging

import hf_vadapter
from conftest import build_model, random_image
from hf_vadapter.modeling.lm_anatomy import get_lm_anatomy

QUESTION = "what color is the circle?"
GREEDY = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False)


def _messages(image=None, text=QUESTION, **image_keys):
    block = {"type": "image", **({"image": image} if image is not None else {}), **image_keys}
    return [{"role": "user", "content": [block, {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def chat_folder(tiny_bases, tmp_path_factory):
    """An adapter folder on a tower and an LM with a chat template."""
    model, processor = build_model(*tiny_bases("vit", "llama", chat_template=True), hf_vadapter.MLPProjectorConfig(pool_size=2))
    folder = tmp_path_factory.mktemp("chat") / "adapter"
    model.save_adapter(folder, processor=processor)
    return folder


class _Captured(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def transformers_warnings():
    """Every warning transformers logs during the test (warning_once included), and every Python warning."""
    handler, root = _Captured(), hf_logging.get_logger()
    hf_logging.warning_once.cache_clear()
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    root.addHandler(handler)
    with warnings.catch_warnings(record=True) as python_warnings:
        warnings.simplefilter("always")
        yield handler.messages, python_warnings
    root.removeHandler(handler)
    hf_logging.set_verbosity(previous)


# ------------------------------------------------------------------------------------------------ chat messages


def test_content_lists_render_the_placeholder_where_the_image_stands(chat_folder):
    processor = AutoProcessor.from_pretrained(chat_folder, trust_remote_code=True)
    prompt = processor.apply_chat_template(_messages(), add_generation_prompt=True, tokenize=False)
    assert prompt == f"<|user|><image>\n{QUESTION}<|end|><|assistant|>"
    text_first = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "image"}]}]
    assert processor.apply_chat_template(text_first, tokenize=False) == "<|user|>a\n<image><image><|end|>"


def test_a_templated_prompt_is_not_wrapped_twice(chat_folder):
    processor = AutoProcessor.from_pretrained(chat_folder, trust_remote_code=True)
    templated = processor.apply_chat_template(_messages(), add_generation_prompt=True, tokenize=False)
    image = random_image(0)
    assert torch.equal(
        processor(images=[image], text=[templated])["input_ids"],
        processor(images=[image], text=[QUESTION])["input_ids"],
    )
    assert processor.tokenizer.decode(processor(text=[templated])["input_ids"][0]).count("<|user|>") == 1


def test_tokenized_messages_generate_like_the_processor_call(chat_folder, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(chat_folder, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(chat_folder, trust_remote_code=True)
    image = random_image(0)
    image.save(tmp_path / "scene.png")
    expected = processor(images=[image], text=[QUESTION])
    for source in (dict(image=image), dict(image=str(tmp_path / "scene.png")), dict(path=str(tmp_path / "scene.png"))):
        inputs = processor.apply_chat_template(
            _messages(**source), add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        assert set(inputs) == {"input_ids", "attention_mask", "pixel_values"}
        for key in inputs:
            assert torch.equal(inputs[key], expected[key]), (source, key)
    generated = model.generate(**inputs, **GREEDY)
    assert torch.equal(generated, model.generate(**expected, **GREEDY))


def test_batched_conversations_pad_left_and_keep_their_images(chat_folder):
    processor = AutoProcessor.from_pretrained(chat_folder, trust_remote_code=True)
    images = [random_image(0), random_image(1)]
    conversations = [_messages(images[0]), _messages(images[1], text="describe the image.")]
    inputs = processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=True, return_dict=True)
    expected = processor(images=images, text=[QUESTION, "describe the image."])
    assert all(torch.equal(inputs[key], expected[key]) for key in expected)


def test_urls_offline_missing_files_and_unknown_blocks_are_typed_errors(chat_folder):
    processor = AutoProcessor.from_pretrained(chat_folder, trust_remote_code=True)
    kwargs = dict(add_generation_prompt=True, tokenize=True, return_dict=True)
    with pytest.raises(hf_vadapter.InvalidImageError, match="offline"):
        processor.apply_chat_template(_messages(url="https://example.com/cat.png"), **kwargs)
    with pytest.raises(hf_vadapter.InvalidImageError, match="no such file"):
        processor.apply_chat_template(_messages(path="/nonexistent/cat.png"), **kwargs)
    audio = [{"role": "user", "content": [{"type": "audio", "path": "a.wav"}]}]
    with pytest.raises(hf_vadapter.InvalidPromptError, match="Unsupported content block"):
        processor.apply_chat_template(audio, **kwargs)


def test_an_lm_without_chat_template_gets_the_plain_format(tiny_bases):
    _, processor = build_model(*tiny_bases("vit", "gpt2"), hf_vadapter.MLPProjectorConfig(pool_size=2))
    assert processor.apply_chat_template(_messages(), add_generation_prompt=True, tokenize=False) == f"<image>\n{QUESTION}"
    turns = [*_messages(), {"role": "assistant", "content": "red."}, {"role": "user", "content": "and the square?"}]
    eos = processor.tokenizer.eos_token
    assert processor.apply_chat_template(turns, tokenize=False) == f"<image>\n{QUESTION}\nred.{eos}\nand the square?"
    image = random_image(0)
    inputs = processor.apply_chat_template(_messages(image), add_generation_prompt=True, tokenize=True, return_dict=True)
    assert torch.equal(inputs["input_ids"], processor(images=[image], text=[QUESTION])["input_ids"])


def test_pipeline_with_messages_equals_apply_chat_template_and_generate(chat_folder, transformers_warnings):
    logged, python_warnings = transformers_warnings
    messages = _messages(random_image(0))
    pipe = pipeline("image-text-to-text", model=str(chat_folder), trust_remote_code=True)
    answer = pipe(text=messages, return_full_text=False, **GREEDY)[0]["generated_text"]

    model = AutoModelForCausalLM.from_pretrained(chat_folder, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(chat_folder, trust_remote_code=True)
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    generated = model.generate(**inputs, **GREEDY)[0, inputs["input_ids"].shape[1] :]
    assert answer == processor.decode(generated, skip_special_tokens=True)
    assert not [m for m in logged if "Falling back to torch.float32" in m], logged


# ------------------------------------------------------------------------------------------------ the CausalLM contract


def test_forward_and_generate_pass_the_cache_without_deprecation_warnings(tiny_bases, transformers_warnings):
    logged, python_warnings = transformers_warnings
    model, processor = build_model(*tiny_bases("vit", "llama"), hf_vadapter.MLPProjectorConfig(pool_size=2))
    inputs = processor(images=[random_image(0)], text=[QUESTION])
    with torch.no_grad():
        output = model(**inputs, use_cache=True)
    assert output.cache is not None
    cached = model.generate(**inputs, **GREEDY)
    assert torch.equal(cached, model.generate(**inputs, use_cache=False, **GREEDY))
    messages = logged + [str(w.message) for w in python_warnings]
    assert not [m for m in messages if "past_key_values" in m], messages


def test_labels_equal_to_input_ids_mask_the_placeholders(tiny_bases):
    model, processor = build_model(*tiny_bases("vit", "llama"), hf_vadapter.MLPProjectorConfig(pool_size=2))
    inputs = processor(images=[random_image(0)], text=[QUESTION])
    loss = model(**inputs, labels=inputs["input_ids"]).loss
    manual = inputs["input_ids"].masked_fill(inputs["input_ids"] == model.config.image_token_id, -100)
    assert torch.isfinite(loss) and torch.equal(loss, model(**inputs, labels=manual).loss)


def test_get_image_features_returns_the_projected_embeddings(tiny_bases):
    model, processor = build_model(*tiny_bases("vit", "llama"), hf_vadapter.MLPProjectorConfig(pool_size=2))
    pixel_values = processor(images=[random_image(0), random_image(1)], text=["<image><image>"])["pixel_values"]
    with torch.no_grad():
        output = model.get_image_features(pixel_values)
        features = model.get_vision_features(pixel_values)
        projected = model.adapter(features).tokens
    hidden = model.config.text_config.hidden_size
    assert output.pooler_output.shape == (2, model.config.num_image_tokens, hidden)
    assert torch.equal(output.pooler_output, projected) and torch.equal(output.last_hidden_state, features)


def test_resize_token_embeddings_model_and_vocab_size(tiny_bases):
    model, processor = build_model(*tiny_bases("vit", "llama"), hf_vadapter.MLPProjectorConfig(pool_size=2))
    old = model.config.vocab_size
    assert old == model.get_input_embeddings().num_embeddings
    assert model.model is model.language_model.model
    model.resize_token_embeddings(old + 8)
    assert model.get_input_embeddings().num_embeddings == model.get_output_embeddings().out_features == old + 8
    assert model.config.vocab_size == model.config.text_config.vocab_size == old + 8
    inputs = processor(images=[random_image(0)], text=[QUESTION])
    assert model(**inputs).logits.shape[-1] == old + 8


# ------------------------------------------------------------------------------------------------ PEFT


def test_lora_for_language_model_targets_the_lm_and_keeps_the_adapter_trainable(tiny_bases, tmp_path):
    model, processor = build_model(*tiny_bases("vit", "llama"), hf_vadapter.MLPProjectorConfig(pool_size=2))
    inputs = processor(images=[random_image(0)], text=[QUESTION], text_target=["red."])
    peft_model = get_peft_model(model, hf_vadapter.lora_for_language_model(model, r=4, lora_dropout=0.5, init_lora_weights=False))
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    assert any("language_model" in n and "lora_A" in n for n in trainable)
    assert any("adapter.modules_to_save" in n for n in trainable)
    assert not any("vision_tower" in n for n in trainable)
    assert not any("vision_tower" in n and "lora_" in n for n, _ in peft_model.named_modules())

    peft_model.train()
    dropouts = [m for n, m in peft_model.named_modules() if n.endswith("lora_dropout.default")]
    assert dropouts and all(m.training for m in dropouts)
    torch.manual_seed(0)
    first, second = peft_model(**inputs).loss, peft_model(**inputs).loss
    assert not torch.equal(first, second)  # dropout at p=0.5 draws other masks
    second.backward()
    assert all(peft_model.get_parameter(n).grad is not None for n in trainable if "lora_B" in n or "modules_to_save" in n)
    peft_model.eval()
    assert not any(m.training for m in dropouts)


def test_transformers_load_adapter_loads_a_peft_folder(tiny_bases, tmp_path):
    bases = tiny_bases("vit", "llama")
    model, processor = build_model(*bases, hf_vadapter.MLPProjectorConfig(pool_size=2))
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=r"language_model\..*\.(q_proj|v_proj)", init_lora_weights=False))
    inputs = processor(images=[random_image(0)], text=[QUESTION])
    with torch.no_grad():
        expected = peft_model(**inputs).logits
    peft_model.save_pretrained(tmp_path / "lora")
    fresh, _ = build_model(*bases, hf_vadapter.MLPProjectorConfig(pool_size=2))
    fresh.load_adapter(str(tmp_path / "lora"), adapter_name="lora")
    with torch.no_grad():
        assert torch.equal(fresh(**inputs).logits, expected)


def test_project_output_of_a_lora_wrapped_gpt2_c_proj_equals_the_plain_one(tiny_bases):
    lm = AutoModelForCausalLM.from_pretrained(tiny_bases("vit", "gpt2")[1])
    anatomy = get_lm_anatomy(lm)
    x = torch.randn(2, 3, lm.config.n_embd)
    with torch.no_grad():
        plain = anatomy.project_output(anatomy.attention(0), x)
        wrapped = get_peft_model(lm, LoraConfig(r=4, target_modules=["c_proj"], fan_in_fan_out=True))
        assert torch.equal(get_lm_anatomy(wrapped.base_model.model).project_output(anatomy.attention(0), x), plain)


def test_in_layer_adapter_with_lora_on_gpt2_matches_the_unwrapped_numbers(tiny_bases):
    """eP-ALM writes into the top layers of a GPT-2 whose c_proj (a Conv1D) LoRA wraps; LoRA starts at zero."""
    model, processor = build_model(*tiny_bases("vit", "gpt2"), hf_vadapter.EPALMConfig(feature_layers=[-2, -1]))
    with torch.no_grad():
        for parameter in model.adapter.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    inputs = processor(images=[random_image(0)], text=[QUESTION])
    with torch.no_grad():
        plain = model(**inputs).logits
        peft_model = get_peft_model(model, hf_vadapter.lora_for_language_model(model, target_modules=["c_attn", "c_proj"]))
        torch.testing.assert_close(peft_model(**inputs).logits, plain, rtol=1e-5, atol=1e-5)
