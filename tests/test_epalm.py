"""eP-ALM: [CLS] levels injected into LM layers >= L through a causal slot, and a soft prompt written at layer L.

The bases are tiny random models, deepened to a 6-layer tower (so the default 6 [CLS] levels exist) and 8-layer LMs
(so L = round(0.6 * 8) = 5 leaves five layers below the injection). Every test uses the default `EPALMConfig`
unless it says otherwise.
"""

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from PIL import Image
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, GPTNeoXConfig, ViTConfig
from transformers.pytorch_utils import Conv1D

import hf_vadapter
from conftest import build_model, random_image, run_without_hf_vadapter
from hf_vadapter.diagnostics import autograd_graph_size
from hf_vadapter.modeling.lm_anatomy import SUPPORTED_MODEL_TYPES, get_lm_anatomy

TRAINED_LMS = ["gpt2", "llama", "opt"]
ALL_LMS = ["gpt2", "llama", "opt", "qwen2", "mistral", "gemma", "phi3"]
TOWER_LAYERS, LM_LAYERS = 6, 8
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}
QUESTION = "what color is the image?"
SAVED = {}  # lm -> [adapter folder, full folder, run folder]


def _deepen(source: str, folder: Path, layers: int, with_tokenizer: bool) -> str:
    """A copy of a tiny base with more layers (same widths, seed 0), so eP-ALM has levels and layers below L."""
    values = AutoConfig.from_pretrained(source).to_dict()
    values.pop("layer_types", None)  # per-layer lists (qwen2) are rebuilt for the new depth
    values["n_layer" if "n_layer" in values else "num_hidden_layers"] = layers
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    torch.manual_seed(0)
    if with_tokenizer:
        AutoModelForCausalLM.from_config(config).save_pretrained(folder)
        AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    else:
        AutoModel.from_config(config).save_pretrained(folder)
        for name in Path(source).glob("preprocessor_config.json"):
            (folder / name.name).write_text(name.read_text())
    return str(folder)


@pytest.fixture(scope="module")
def bases(tiny_bases, tmp_path_factory):
    """`bases(lm)` -> (6-layer ViT folder, 8-layer LM folder)."""
    root = tmp_path_factory.mktemp("epalm-bases")
    cache = {}

    def get(lm: str):
        tower_src, lm_src = tiny_bases("vit", lm)
        if "tower" not in cache:
            cache["tower"] = _deepen(tower_src, root / "vit", TOWER_LAYERS, with_tokenizer=False)
        if lm not in cache:
            cache[lm] = _deepen(lm_src, root / lm, LM_LAYERS, with_tokenizer=True)
        return cache["tower"], cache[lm]

    return get


def _solid(colour: str) -> Image.Image:
    return Image.new("RGB", (32, 32), COLOURS[colour])


def _colour_batch(processor, colours, with_targets=True):
    return processor(
        images=[_solid(c) for c in colours],
        text=[QUESTION] * len(colours),
        text_target=[f"{c}." for c in colours] if with_targets else None,
    )


def _layer_outputs(model):
    """Forward hooks that record each decoder layer's output hidden states."""
    outputs, handles = {}, []
    for index, layer in enumerate(get_lm_anatomy(model.language_model).decoder_layers):

        def hook(module, args, output, index=index):
            outputs[index] = output[0] if isinstance(output, tuple) else output

        handles.append(layer.register_forward_hook(hook))
    return outputs, handles


def _expected_trainable(config: hf_vadapter.EPALMConfig, tower_width: int, lm_width: int) -> int:
    levels = 1 if config.shared_projection else len(config.feature_layers)
    count = levels * (tower_width * lm_width + lm_width)
    prompt, hidden = config.num_prompt_tokens, config.prompt_mlp_hidden_size or lm_width
    if prompt:
        count += prompt * lm_width
        if config.prompt_mlp:
            count += (lm_width * hidden + hidden) + (hidden * lm_width + lm_width)
    return count


# ----------------------------------------------------------------------------------------------- config


def test_config_defaults_round_trip_and_errors(tiny_bases):
    config = hf_vadapter.EPALMConfig()
    assert config.feature_layers == [-6, -5, -4, -3, -2, -1]
    assert (config.feature_select, config.feature_norm) == ("cls", True)
    assert (config.layers_per_level, config.num_prompt_tokens, config.prompt_placement) == (2, 10, "layer")
    assert config.resolved_injection_layer(32) == 19  # the paper's L for OPT's 32 layers
    saved = hf_vadapter.VisionAdapterConfig(adapter_config=config).adapter_config
    assert hf_vadapter.modeling.adapters.adapter_config_from_dict(saved) == config

    for bad in (
        dict(feature_select="patch"),
        dict(injection_layer=-1),
        dict(layers_per_level=0),
        dict(num_prompt_tokens=-1),
        dict(prompt_placement="middle"),
    ):
        with pytest.raises(hf_vadapter.AdapterConfigError):
            hf_vadapter.EPALMConfig(**bad)
    # The default 6 levels need a tower of at least 6 layers: the 2-layer tiny tower is refused, not clamped.
    with pytest.raises(hf_vadapter.AdapterConfigError, match="feature_layers"):
        build_model(*tiny_bases("vit", "llama"), hf_vadapter.EPALMConfig())
    with pytest.raises(hf_vadapter.AdapterConfigError, match="embedding output"):
        build_model(*tiny_bases("vit", "llama"), hf_vadapter.EPALMConfig(feature_layers=[-3, -1]))
    with pytest.raises(hf_vadapter.AdapterConfigError, match="injection_layer"):
        build_model(*tiny_bases("vit", "llama"), hf_vadapter.EPALMConfig(feature_layers=[-1], injection_layer=2))


def test_unknown_lm_family_names_the_supported_ones():
    vision = ViTConfig(hidden_size=32, num_hidden_layers=6, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8)
    text = GPTNeoXConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=64)
    config = hf_vadapter.VisionAdapterConfig(vision, text, hf_vadapter.EPALMConfig(), image_size=32, image_token_id=64)
    with pytest.raises(hf_vadapter.UnsupportedArchitectureError) as error:
        hf_vadapter.VisionAdapterForCausalLM(config)
    assert all(model_type in str(error.value) for model_type in SUPPORTED_MODEL_TYPES)


# ----------------------------------------------------------------------------------------------- no backward below L


def test_no_backward_work_below_injection_layer(bases):
    model, processor = build_model(*bases("llama"), hf_vadapter.EPALMConfig())
    injection_layer = model.adapter.injection_layer
    assert injection_layer == 5
    batch = _colour_batch(processor, ["red", "blue"])
    model.train()
    outputs, handles = _layer_outputs(model)
    loss = model(**batch).loss
    # Autograd records nothing for a layer whose output does not require grad: no backward work is possible there.
    assert [outputs[i].requires_grad for i in range(LM_LAYERS)] == [i >= injection_layer for i in range(LM_LAYERS)]
    nodes = autograd_graph_size(loss)
    loss.backward()
    assert all(p.grad is None for p in model.language_model.parameters())
    assert all(p.grad is not None for p in model.adapter.parameters())

    # The paper's input placement of the prompt makes every layer part of the backward pass (the check can fail).
    model_input, _ = build_model(*bases("llama"), hf_vadapter.EPALMConfig(prompt_placement="input"))
    model_input.train()
    outputs_input, handles_input = _layer_outputs(model_input)
    loss_input = model_input(**batch).loss
    assert all(outputs_input[i].requires_grad for i in range(LM_LAYERS))
    assert autograd_graph_size(loss_input) > 1.5 * nodes
    for handle in handles + handles_input:
        handle.remove()


def test_gradient_checkpointing_gives_the_same_gradients(bases):
    grads = []
    for checkpointing in (False, True):
        model, processor = build_model(*bases("gpt2"), hf_vadapter.EPALMConfig())
        if checkpointing:
            model.activation_checkpointing_enable()
        model.train()
        model(**_colour_batch(processor, ["red", "green"])).loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.adapter.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("lm", TRAINED_LMS)
def test_trains_on_colour_task_and_saves(bases, tmp_path, lm):
    # A random 8-layer LM leaves the top 3 layers (the default L = 5) too little room to learn colours in a few
    # dozen steps; injecting from layer 1 makes the toy task learnable in 60 steps. Everything else is default.
    config = hf_vadapter.EPALMConfig(injection_layer=1)
    model, processor = build_model(*bases(lm), config)
    tower_width, lm_width = model.config.vision_config.hidden_size, model.config.text_config.hidden_size
    trainable, _ = model.get_nb_trainable_parameters()
    assert trainable == _expected_trainable(config, tower_width, lm_width)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        f"adapter.{n}" for n, _ in model.adapter.named_parameters()
    }
    frozen_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("adapter.")}
    adapter_before = {k: v.clone() for k, v in model.adapter.state_dict().items()}

    batch = _colour_batch(processor, list(COLOURS))
    features = model.get_vision_features(batch.pop("pixel_values"))  # the tower is frozen: a feature cache
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = model(**batch, image_features=features).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    assert losses[-1] < 0.4 * losses[0], losses
    # Only the adapter moved: every tensor of the tower and the LM is bit-identical, every adapter tensor changed.
    for key, value in model.state_dict().items():
        if key in frozen_before:
            assert torch.equal(frozen_before[key], value), key
    assert all(not torch.equal(adapter_before[k], v) for k, v in model.adapter.state_dict().items())

    # The answer's first token names the colour seen: the image reaches the text through the injected slot.
    prompts = processor(images=[_solid(c) for c in COLOURS], text=[QUESTION] * len(COLOURS))
    with torch.no_grad():
        predicted = model(**prompts).logits[:, -1].argmax(-1)
    wanted = [processor.tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in COLOURS]
    assert len(set(wanted)) == len(COLOURS)
    assert sum(int(p) == w for p, w in zip(predicted, wanted)) >= 3, (predicted, wanted)

    # Save adapter-only and full; reload in this process with equal logits; keep the folders for a fresh process.
    with torch.no_grad():
        expected = model(**prompts).logits
    adapter_only, full = tmp_path / "adapter", tmp_path / "full"
    model.save_adapter(adapter_only, processor=processor)
    model.save_pretrained(full, full=True)
    assert (adapter_only / "epalm.py").is_file()
    for folder in (adapter_only, full):
        reloaded = hf_vadapter.VisionAdapterForCausalLM.from_pretrained(folder)
        with torch.no_grad():
            torch.testing.assert_close(reloaded(**prompts).logits, expected, rtol=0, atol=0)
    torch.save(dict(prompts), tmp_path / "inputs.pt")
    torch.save(expected, tmp_path / "expected.pt")
    SAVED[lm] = [str(adapter_only), str(full), str(tmp_path)]


def test_fresh_process_trust_remote_code_load():
    if len(SAVED) < len(TRAINED_LMS):
        pytest.skip("runs after the training tests above")
    script = f"""
    import torch
    from transformers import AutoModelForCausalLM
    results = {{}}
    for lm, (adapter_only, full, root) in {json.dumps(SAVED)}.items():
        inputs, expected = torch.load(root + "/inputs.pt"), torch.load(root + "/expected.pt")
        for kind, folder in (("adapter", adapter_only), ("full", full)):
            model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
            with torch.no_grad():
                diff = (model(**inputs).logits - expected).abs().max().item()
            results[lm + "/" + kind] = [diff, type(model.adapter).__module__]
    print(json.dumps(results))
    """
    results = run_without_hf_vadapter(script)
    assert len(results) == 2 * len(TRAINED_LMS)
    for key, (diff, module) in results.items():
        assert diff == 0.0, key
        assert module.startswith("transformers_modules") and module.endswith("epalm"), (key, module)


# ----------------------------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("lm", ALL_LMS)
def test_causal_slot_cache_and_padding(bases, lm):
    model, processor = build_model(*bases(lm), hf_vadapter.EPALMConfig(layers_per_level=1), seed=1)
    model.eval()
    image_token_id = model.config.image_token_id

    # Causality: changing a later text token never changes logits at earlier positions, the slots included.
    first = processor(images=[random_image(0)], text=["what color is the circle? red"])
    ids = first["input_ids"][0]
    slot = int((ids == image_token_id).nonzero()[-1])  # the [CLS] slot, after the prompt slots
    changed = {k: v.clone() for k, v in first.items()}
    later = len(ids) - 2
    changed["input_ids"][0, later] = (ids[later] + 7) % 200
    with torch.no_grad():
        logits = model(**first).logits
        logits_changed = model(**changed).logits
        logits_other_image = model(**processor(images=[random_image(5)], text=["what color is the circle? red"])).logits
    assert later > slot
    torch.testing.assert_close(logits_changed[0, :later], logits[0, :later], rtol=0, atol=1e-6)
    assert (logits_changed[0, later:] - logits[0, later:]).abs().max() > 1e-3
    # The image reaches the text only from the slot on: positions before it are untouched, later ones move.
    torch.testing.assert_close(logits_other_image[0, :slot], logits[0, :slot], rtol=0, atol=1e-6)
    assert (logits_other_image[0, slot + 1 :] - logits[0, slot + 1 :]).abs().max() > 1e-4

    # Cached generation equals uncached; a left-padded batch equals each prompt alone.
    prompts = ["what color is the circle?", "describe the image. how many shapes are there?"]
    inputs = processor(images=[random_image(0), random_image(1)], text=prompts)
    assert inputs["attention_mask"][0].min() == 0, "the batch must be left-padded for this check"
    settings = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)
    cached = model.generate(**inputs, **settings)
    assert torch.equal(cached, model.generate(**inputs, use_cache=False, **settings))
    beams = dict(settings, num_beams=3)
    assert torch.equal(model.generate(**inputs, **beams), model.generate(**inputs, use_cache=False, **beams))
    for row, prompt in enumerate(prompts):
        single = processor(images=[random_image(row)], text=[prompt])
        assert torch.equal(model.generate(**single, **settings)[0, -6:], cached[row, -6:])
        with torch.no_grad():
            torch.testing.assert_close(
                model(**inputs).logits[row, -1], model(**single).logits[0, -1], rtol=1e-4, atol=1e-4
            )


def test_each_image_gets_its_own_slots(bases):
    model, processor = build_model(*bases("llama"), hf_vadapter.EPALMConfig(), seed=1)
    model.eval()
    prompt = "<image> left. <image> right. what color is the circle?"
    inputs = processor(images=[[random_image(0), random_image(1)]], text=[prompt])
    changed = processor(images=[[random_image(0), random_image(2)]], text=[prompt])
    slots = (inputs["input_ids"][0] == model.config.image_token_id).nonzero()[:, 0]
    assert len(slots) == 2 * model.config.num_image_tokens
    second_cls = int(slots[-1])
    with torch.no_grad():
        logits, logits_changed = model(**inputs).logits[0], model(**changed).logits[0]
    # The second image reaches the text only from its own [CLS] slot on.
    torch.testing.assert_close(logits_changed[:second_cls], logits[:second_cls], rtol=0, atol=1e-6)
    assert (logits_changed[second_cls + 1 :] - logits[second_cls + 1 :]).abs().max() > 1e-4


# ----------------------------------------------------------------------------------------------- PEFT


@pytest.mark.parametrize("lm", ["llama", "gpt2"])
def test_lora_on_the_lm_trains_saves_and_reloads(bases, tmp_path, lm):
    model, processor = build_model(*bases(lm), hf_vadapter.EPALMConfig())
    anatomy = get_lm_anatomy(model.language_model)
    injection_layer = model.adapter.injection_layer
    names = {module: name for name, module in model.language_model.named_modules()}
    # LoRA on the attention projections of layers >= L only, so the backward pass still stops at L.
    targets = [
        f"language_model.{names[anatomy.attention(i)]}.{child}"
        for i in range(injection_layer, LM_LAYERS)
        for child, module in anatomy.attention(i).named_children()
        if isinstance(module, (nn.Linear, Conv1D))
    ]
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, modules_to_save=["adapter"]))
    trained = {n: p.clone() for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trained) and any("adapter.modules_to_save.default." in n for n in trained)
    assert all("lora_" in n or "adapter.modules_to_save.default." in n for n in trained)

    batch = _colour_batch(processor, list(COLOURS))
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=3e-3)
    peft_model.train()
    outputs, handles = _layer_outputs(model)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = peft_model(**batch).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    for handle in handles:
        handle.remove()
    assert losses[-1] < losses[0], losses
    assert [outputs[i].requires_grad for i in range(LM_LAYERS)] == [i >= injection_layer for i in range(LM_LAYERS)]
    # PEFT trains a deep copy of the adapter; its context must reach the hooks the original installed, so every
    # tensor of the copy (connectors and prompt) gets a gradient and moves, as do the LoRA B matrices.
    moved = {n for n, p in peft_model.named_parameters() if n in trained and not torch.equal(trained[n], p)}
    assert {n for n in trained if "modules_to_save" in n or "lora_B" in n} <= moved
    peft_model.eval()

    inputs = processor(images=[_solid("red"), random_image(1)], text=[QUESTION, "describe the image."])
    settings = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False)
    with torch.no_grad():
        expected = peft_model(**inputs).logits
    generated = peft_model.generate(**inputs, **settings)
    assert torch.equal(generated, peft_model.generate(**inputs, use_cache=False, **settings))
    peft_model.save_pretrained(tmp_path / "lora")

    fresh, _ = build_model(*bases(lm), hf_vadapter.EPALMConfig(), seed=1)  # another adapter init
    with torch.no_grad():
        assert not torch.allclose(fresh(**inputs).logits, expected)
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "lora")
    reloaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, expected, rtol=0, atol=0)
    assert torch.equal(reloaded.generate(**inputs, **settings), generated)
