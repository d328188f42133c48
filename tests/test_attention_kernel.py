"""In-layer adapters hook the LM's layers and attention modules; the LM's own attention keeps its sdpa kernel."""

from unittest import mock

import pytest
import torch

import hf_vadapter
from conftest import build_model, random_image

ADAPTERS = {
    "mlp": lambda: hf_vadapter.MLPProjectorConfig(pool_size=2),
    "epalm": lambda: hf_vadapter.EPALMConfig(feature_layers=[-1]),
    "llama_adapter_v2": lambda: hf_vadapter.LlamaAdapterV2Config(),
}


@pytest.mark.parametrize("lm", ["llama", "gpt2", "opt"])
@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_every_lm_layer_attends_through_sdpa(tiny_bases, lm, adapter):
    model, processor = build_model(*tiny_bases("clip", lm), ADAPTERS[adapter]())
    assert model.language_model.config._attn_implementation == "sdpa"
    inputs = processor(images=[random_image(0)], text=["what color is the circle?"], text_target=["red."])
    inputs["image_features"] = model.get_vision_features(inputs.pop("pixel_values"))  # the tower's own sdpa calls
    sdpa = torch.nn.functional.scaled_dot_product_attention
    with mock.patch("torch.nn.functional.scaled_dot_product_attention", wraps=sdpa) as calls:
        model.language_model(input_ids=inputs["input_ids"].clamp(max=0))  # the bare LM, for its own count
        bare = calls.call_count
        calls.reset_mock()
        model(**inputs).loss.backward()
    assert bare == model.config.text_config.num_hidden_layers
    assert calls.call_count == bare  # the adapter's hooks add work around attention, not a second kernel
