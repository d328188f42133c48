"""The adapter protocol: typed outputs and the hook lifecycle (attach, detach, enable/disable)."""

import pytest
import torch

import hf_vadapter
from conftest import build_model, random_image
from hf_vadapter.modeling.adapter_base import AdapterOutput


def _hook_count(module: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def test_llama_adapter_v2_hooks_disable_detach_and_reattach(tiny_bases):
    model, processor = build_model(*tiny_bases("vit", "llama"), hf_vadapter.LlamaAdapterV2Config())
    with torch.no_grad():  # away from the zero init, so that the adapter changes the LM's output
        for parameter in model.adapter.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    text = processor(text=["say something about shapes"])
    with torch.no_grad():
        plain = model.language_model(**text).logits
        adapted = model(**text).logits
        assert not torch.allclose(adapted, plain)
        model.adapter.disable_adapter_layers()
        torch.testing.assert_close(model(**text).logits, plain, rtol=0, atol=0)
        model.adapter.enable_adapter_layers()
        torch.testing.assert_close(model(**text).logits, adapted, rtol=0, atol=0)
        assert _hook_count(model.language_model) > 0
        model.adapter.detach()
        assert _hook_count(model.language_model) == 0
        torch.testing.assert_close(model(**text).logits, plain, rtol=0, atol=0)
        model.adapter.attach(model.language_model)  # the trained values come back with the hooks
        torch.testing.assert_close(model(**text).logits, adapted, rtol=0, atol=0)


def test_epalm_detach_removes_its_hooks(tiny_bases):
    model, _ = build_model(*tiny_bases("vit", "llama"), hf_vadapter.EPALMConfig(feature_layers=[-2, -1]))
    assert _hook_count(model.language_model) > 0
    model.adapter.detach()
    assert _hook_count(model.language_model) == 0


@pytest.mark.parametrize(
    "config",
    [hf_vadapter.MLPProjectorConfig(pool_size=2), hf_vadapter.EPALMConfig(feature_layers=[-2, -1]),
     hf_vadapter.LlamaAdapterV2Config(), hf_vadapter.PerceiverResamplerConfig(num_latents=3, hidden_size=16, num_heads=2)],
    ids=lambda config: config.adapter_type,
)  # fmt: skip
def test_every_family_returns_an_adapter_output(tiny_bases, config):
    model, processor = build_model(*tiny_bases("vit", "llama"), config)
    features = model.get_vision_features(processor(images=[random_image(0)], text=["<image>"])["pixel_values"])
    output = model.adapter(features)
    assert isinstance(output, AdapterOutput)
    if model.adapter.num_image_tokens:
        assert output.tokens.shape == (1, model.adapter.num_image_tokens, model.config.text_config.hidden_size)
    else:
        assert output.tokens is None and output.context is not None
