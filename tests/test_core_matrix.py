"""The core invariants on every tower x LM x baseline adapter, with tiny random bases.

Each case checks: a finite loss; gradients on adapter parameters only; frozen weights bit-identical after optimizer
steps; cached generation == uncached; a left-padded batch == single runs; save/load (full and adapter-only) gives
equal logits. The last test loads every saved folder in one fresh process where hf_vadapter cannot be imported.
"""

import itertools
import json

import pytest
import torch

import hf_vadapter
from conftest import build_model, random_image, run_without_hf_vadapter

TOWERS = ["vit", "clip", "siglip", "dinov2"]
LMS = ["gpt2", "llama", "qwen2", "opt", "gemma"]
ADAPTERS = {
    "mlp": lambda: hf_vadapter.MLPProjectorConfig(feature_layers=[-2, -1], pool_size=2),
    "perceiver": lambda: hf_vadapter.PerceiverResamplerConfig(
        num_latents=6, depth=2, hidden_size=32, num_heads=4, feature_select="both"
    ),
}
# The MLP projector's binding options: several tokens per cell, mixtures of the LM's word embeddings, fixed LM tokens
# before each of the 2x2 cells (prefixes of different lengths), and focus tokens that read the text before the image.
OPTION_ADAPTERS = {
    "mlp_slots": lambda: hf_vadapter.MLPProjectorConfig(feature_layers=[-1], pool_size=2, tokens_per_cell=3),
    "mlp_words": lambda: hf_vadapter.MLPProjectorConfig(
        feature_layers=[-2, -1], pool_size=2, tokens_per_cell=2, token_vocabulary=list(range(5, 25)),
        cell_prefix_ids=[[3], [4, 5], [6], [7, 8, 9]], num_prompt_tokens=2,
    ),
    "mlp_focus": lambda: hf_vadapter.MLPProjectorConfig(
        feature_layers=[-1], pool_size=2, tokens_per_cell=2, num_focus_tokens=2, focus_dim=8
    ),
}
CASES = [
    *itertools.product(TOWERS, LMS, ADAPTERS),
    ("vit", "mistral", "mlp"),
    ("clip", "phi3", "perceiver"),
    ("clip", "qwen2", "mlp_slots"),
    ("dinov2", "llama", "mlp_words"),
    ("vit", "gpt2", "mlp_words"),
    ("siglip", "opt", "mlp_words"),
    ("clip", "gemma", "mlp_focus"),
]
ADAPTERS.update(OPTION_ADAPTERS)
SAVED = {}  # case id -> (full folder, adapter folder, inputs path, expected logits path)


def _batch(processor, with_targets: bool):
    prompts = ["what color is the circle?", "describe the image. how many shapes are there?"]
    targets = ["red.", "a red circle. two."] if with_targets else None
    images = [random_image(0), random_image(1)]
    return processor(images=images, text=prompts, text_target=targets)


@pytest.mark.parametrize("tower,lm,adapter", CASES, ids=["-".join(case) for case in CASES])
def test_core_invariants(tiny_bases, tmp_path, tower, lm, adapter):
    model, processor = build_model(*tiny_bases(tower, lm), ADAPTERS[adapter]())
    frozen_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("adapter.")}

    # Loss is finite and only the adapter receives gradients.
    model.train()
    batch = _batch(processor, with_targets=True)
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    assert with_grad and all(name.startswith("adapter.") for name in with_grad)
    assert with_grad == {name for name, p in model.named_parameters() if p.requires_grad}

    # Optimizer steps move the adapter and leave every frozen tensor bit-identical.
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    adapter_before = {k: v.clone() for k, v in model.adapter.state_dict().items()}
    for _ in range(3):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    assert any(not torch.equal(adapter_before[k], v) for k, v in model.adapter.state_dict().items())
    for key, value in model.state_dict().items():
        if key in frozen_before:
            assert torch.equal(frozen_before[key], value), key
    model.eval()

    # Cached generation equals uncached; the left-padded batch equals each prompt run alone.
    inputs = _batch(processor, with_targets=False)
    assert inputs["attention_mask"][0].min() == 0, "the batch must be left-padded for this check"
    settings = dict(max_new_tokens=6, do_sample=False, min_new_tokens=6)
    cached = model.generate(**inputs, **settings)
    uncached = model.generate(**inputs, use_cache=False, **settings)
    assert torch.equal(cached, uncached)
    prompts = ["what color is the circle?", "describe the image. how many shapes are there?"]
    for row, prompt in enumerate(prompts):
        single = processor(images=[random_image(row)], text=[prompt])
        alone = model.generate(**single, **settings)
        assert torch.equal(alone[0, -6:], cached[row, -6:])
        with torch.no_grad():
            batch_logits = model(**inputs).logits[row, -1]
            single_logits = model(**single).logits[0, -1]
        torch.testing.assert_close(batch_logits, single_logits, rtol=1e-4, atol=1e-4)

    # Save and load: full and adapter-only folders give equal logits in this process.
    with torch.no_grad():
        expected = model(**inputs).logits
    full, adapter_only = tmp_path / "full", tmp_path / "adapter"
    model.save_pretrained(full, full=True)
    model.save_adapter(adapter_only, processor=processor)
    assert not (adapter_only / "model.safetensors").exists()
    for folder in (full, adapter_only):
        reloaded = hf_vadapter.VisionAdapterForCausalLM.from_pretrained(folder)
        with torch.no_grad():
            torch.testing.assert_close(reloaded(**inputs).logits, expected, rtol=0, atol=0)
    torch.save(dict(inputs), tmp_path / "inputs.pt")
    torch.save(expected, tmp_path / "expected.pt")
    torch.save(cached, tmp_path / "generated.pt")
    SAVED["-".join((tower, lm, adapter))] = [str(full), str(adapter_only), str(tmp_path)]


def test_fresh_process_trust_remote_code_loads_every_saved_folder():
    if len(SAVED) < len(CASES):
        pytest.skip("runs after the whole matrix above")
    script = f"""
    import torch
    from transformers import AutoModelForCausalLM, AutoProcessor
    results = {{}}
    for case, (full, adapter_only, root) in {json.dumps(SAVED)}.items():
        inputs = torch.load(root + "/inputs.pt")
        expected = torch.load(root + "/expected.pt")
        generated = torch.load(root + "/generated.pt")
        for kind, folder in (("full", full), ("adapter", adapter_only)):
            model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
            with torch.no_grad():
                diff = (model(**inputs).logits - expected).abs().max().item()
            tokens = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False)
            results[case + "/" + kind] = [diff, bool(torch.equal(tokens, generated)), type(model).__module__]
        processor = AutoProcessor.from_pretrained(adapter_only, trust_remote_code=True)
        results[case + "/processor"] = [0.0, processor.num_image_tokens > 0, type(processor).__module__]
    print(json.dumps(results))
    """
    results = run_without_hf_vadapter(script)
    assert len(results) == 3 * len(CASES)
    for key, (diff, same_tokens, module) in results.items():
        assert diff == 0.0, key
        assert same_tokens, key
        assert module.startswith("transformers_modules"), (key, module)


def test_bf16_language_model_with_fp32_prefix_adapter_trains(tiny_bases):
    model, processor = build_model(*tiny_bases("dinov2", "llama"), ADAPTERS["mlp"]())
    model.cast_language_model(torch.bfloat16)
    assert model.language_model.dtype == torch.bfloat16 and next(model.adapter.parameters()).dtype == torch.float32
    model.train()
    loss = model(**_batch(processor, with_targets=True)).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.adapter.parameters())
    model.eval()
    inputs = _batch(processor, with_targets=False)
    settings = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert torch.equal(model.generate(**inputs, **settings), model.generate(**inputs, use_cache=False, **settings))


def test_bf16_language_model_is_refused_for_in_layer_adapters(tiny_bases):
    model, _ = build_model(*tiny_bases("vit", "llama"), hf_vadapter.EPALMConfig(feature_layers=[-2, -1]))
    with pytest.raises(hf_vadapter.AdapterConfigError, match="prefix adapters"):
        model.cast_language_model(torch.bfloat16)


def test_two_tower_checkpoint_gives_its_vision_half(tmp_path):
    from transformers import CLIPConfig, CLIPModel, CLIPVisionModel

    from hf_vadapter.modeling.modeling_vadapter import load_vision_tower

    sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    config = CLIPConfig(
        text_config=dict(vocab_size=99, eos_token_id=2, **sizes), vision_config=dict(image_size=32, patch_size=8, **sizes)
    )
    two_towers = CLIPModel(config)
    two_towers.save_pretrained(tmp_path)
    tower = load_vision_tower(str(tmp_path))
    assert isinstance(tower, CLIPVisionModel)
    both = two_towers.state_dict()
    loaded = tower.state_dict()
    assert loaded
    for name, value in loaded.items():
        full_name = name if name.startswith("vision_model.") else f"vision_model.{name}"
        assert torch.equal(value, both[full_name]), name
