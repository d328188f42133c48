"""A sixth adapter family registered from outside the library (tests/toy_adapter.py) joins the core matrix, saves
and loads, and loads as remote code where neither hf_vadapter nor the family's package can be imported."""

import json

import pytest
import torch

import hf_vadapter
import test_core_matrix as core_matrix
import toy_adapter
from conftest import build_model, random_image, run_without_hf_vadapter
from hf_vadapter.modeling.adapters import ADAPTER_REGISTRY, register_adapter


def test_registered_family_passes_the_core_invariants(tiny_bases, tmp_path, monkeypatch):
    assert ADAPTER_REGISTRY["pooled_linear"] == (toy_adapter.PooledLinearConfig, toy_adapter.PooledLinear)
    monkeypatch.setitem(core_matrix.ADAPTERS, "pooled_linear", lambda: toy_adapter.PooledLinearConfig(num_tokens=3))
    monkeypatch.setattr(core_matrix, "SAVED", {})
    core_matrix.test_core_invariants(tiny_bases, tmp_path, "clip", "qwen2", "pooled_linear")
    (full, adapter_only, root), = core_matrix.SAVED.values()
    for folder in (full, adapter_only):  # the family's file travels with every checkpoint
        assert (tmp_path / folder / "toy_adapter.py").is_file()
        assert json.loads((tmp_path / folder / "config.json").read_text())["adapter_config"]["code"] == (
            "toy_adapter.PooledLinearConfig.PooledLinear"
        )
    script = f"""
    import torch
    from transformers import AutoModelForCausalLM, AutoProcessor
    inputs = torch.load({root!r} + "/inputs.pt")
    expected = torch.load({root!r} + "/expected.pt")
    results = {{}}
    for kind, folder in (("full", {full!r}), ("adapter", {adapter_only!r})):
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
        with torch.no_grad():
            results[kind] = [(model(**inputs).logits - expected).abs().max().item(), type(model.adapter).__module__]
    results["processor"] = AutoProcessor.from_pretrained({adapter_only!r}, trust_remote_code=True).num_image_tokens
    print(json.dumps(results))
    """
    results = run_without_hf_vadapter(script)
    for kind in ("full", "adapter"):
        diff, module = results[kind]
        assert diff == 0.0 and module.startswith("transformers_modules") and module.endswith("toy_adapter"), kind
    assert results["processor"] == 3


def test_registering_checks_the_family(tiny_bases):
    with pytest.raises(hf_vadapter.AdapterConfigError, match="built-in"):
        register_adapter(hf_vadapter.MLPProjectorConfig, toy_adapter.PooledLinear)
    with pytest.raises(hf_vadapter.AdapterConfigError, match="one file"):
        register_adapter(toy_adapter.PooledLinearConfig, hf_vadapter.modeling.mlp_projector.MLPProjector)
    model, processor = build_model(*tiny_bases("vit", "llama"), toy_adapter.PooledLinearConfig(num_tokens=2))
    output = model.adapter.embed_images(model.get_vision_features(processor(images=[random_image(0)], text=["<image>"])["pixel_values"]))
    assert output.context is None and output.tokens.shape == (1, 2, model.config.text_config.hidden_size)
    assert torch.equal(model.get_image_features(processor(images=[random_image(0)], text=["<image>"])["pixel_values"]).pooler_output,
                       output.tokens)  # fmt: skip
