"""LLaMA-Adapter V2: zero-init gated prompts late, gated visual tokens early, bias/scale tuning, disjoint groups.

Bases are the shared tiny random towers and 2-layer LMs (initializer_range 0.3), so with the defaults layer 0 gets
the visual tokens and layer 1 the adaption prompts. Where a check needs the gates away from zero, the test sets them.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from PIL import Image
from transformers import AutoConfig, AutoModelForCausalLM

import hf_vadapter
from conftest import build_model, random_image, run_without_hf_vadapter
from hf_vadapter.experts import DEFAULT_TEMPLATE, add_expert_context, adapter_captioner, generate_with_experts
from hf_vadapter.modeling.lm_anatomy import SUPPORTED_MODEL_TYPES
from hf_vadapter.training.joint_training import joint_loss, split_by_image

TOWER = "clip"
TRAINED_LMS = ["llama", "gpt2", "qwen2"]
ALL_LMS = ["llama", "qwen2", "mistral", "gemma", "phi3", "opt", "gpt2"]
COLOURS = {"red": (220, 30, 30), "blue": (30, 40, 220)}
QUESTION = "what color is the circle?"
TEXT_TASK = (["what color is the circle?", "how many shapes are there?"], ["red.", "two."])
PROMPTS = ["what color is the circle?", "describe the image. how many shapes are there?"]
SETTINGS = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)
SAVED = {}  # lm -> [adapter folder, full folder, run folder]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices: one thread is faster than several contending for a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _solid(name: str) -> Image.Image:
    return Image.new("RGB", (32, 32), COLOURS[name])


def _frozen_logits(lm_path: str, inputs) -> torch.Tensor:
    """Logits of the plain LM from its folder, with the positions the model derives from the mask."""
    lm = AutoModelForCausalLM.from_pretrained(lm_path)
    mask = inputs["attention_mask"]
    with torch.no_grad():
        return lm(input_ids=inputs["input_ids"], attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits


def _open_gates(model, value: float = 0.8, seed: int = 0) -> None:
    """Move every gate away from zero and the biases/scales away from identity, so the in-layer paths matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.adapter.named_parameters():
            if name.endswith("gates"):
                param.fill_(value)
            elif name.startswith("linear_bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
            elif name.startswith("linear_scale"):
                param.copy_(1 + torch.randn(param.shape, generator=generator) * 0.05)


def _groups(model):
    groups = model.adapter.parameter_groups()
    params = dict(model.named_parameters())
    return {group: {name: params[name] for name in names} for group, names in groups.items()}


def _snapshot(named):
    return {name: p.detach().clone() for name, p in named.items()}


def _hand_count(model) -> int:
    """Trainable parameters from the configs alone: prompts, gates, visual path, bias/scale, norms."""
    text, cfg = model.config.text_config, model.config.adapter
    d, heads, layers = text.hidden_size, text.num_attention_heads, text.num_hidden_layers
    early, late = cfg.layer_plan(layers)
    if text.model_type == "gpt2":
        linear_outputs = layers * (3 * d + d + 4 * d + d)  # c_attn, attn.c_proj, c_fc, mlp.c_proj
        norms = (2 * layers + 1) * 2 * d  # ln_1, ln_2 per block, ln_f; LayerNorm weight and bias
    else:
        head_dim = getattr(text, "head_dim", None) or d // heads
        kv = text.num_key_value_heads
        attention = heads * head_dim + 2 * kv * head_dim + d
        linear_outputs = layers * (attention + 2 * text.intermediate_size + d)  # q,k,v,o + gate,up + down
        norms = (2 * layers + 1) * d  # two RMSNorms per layer and the final one
    prompts = len(late) * (cfg.num_prompt_tokens * d + heads)
    tower_width = model.config.vision_config.hidden_size * len(cfg.feature_layers)
    visual = (tower_width * d + d) + 2 * d + cfg.num_visual_tokens * d + len(early) * heads
    return prompts + visual + 2 * linear_outputs + norms


# ------------------------------------------------------------------------------------------------ config


def test_config_defaults_round_trip_and_errors():
    config = hf_vadapter.LlamaAdapterV2Config()
    assert (config.num_prompt_tokens, config.num_early_layers, config.num_visual_tokens) == (10, 1, 20)
    assert (config.feature_select, config.feature_norm, config.disjoint_groups) == ("cls", True, True)
    again = hf_vadapter.VisionAdapterConfig(adapter_config=config.to_dict()).adapter
    assert again == config and again.adapter_type == "llama_adapter_v2"
    # The paper's share: 30 of 32 layers, after the early-fusion layer; a 2-layer LM gets 1 prompt layer.
    assert config.layer_plan(32) == ([0], list(range(2, 32)))
    assert config.layer_plan(2) == ([0], [1])
    assert hf_vadapter.LlamaAdapterV2Config(use_early_fusion=False).layer_plan(32) == ([], list(range(2, 32)))
    assert hf_vadapter.LlamaAdapterV2Config(num_prompt_layers=4, num_early_layers=2).layer_plan(8) == (
        [0, 1],
        [4, 5, 6, 7],
    )
    for bad in (dict(num_prompt_tokens=0), dict(num_visual_tokens=0), dict(num_prompt_layers=0)):
        with pytest.raises(hf_vadapter.AdapterConfigError):
            hf_vadapter.LlamaAdapterV2Config(**bad)
    with pytest.raises(hf_vadapter.AdapterConfigError):
        hf_vadapter.LlamaAdapterV2Config(num_prompt_layers=40).layer_plan(32)
    with pytest.raises(hf_vadapter.AdapterConfigError, match="nothing would train"):
        hf_vadapter.LlamaAdapterV2Config(use_prompts=False, use_early_fusion=False, use_bias_scale=False, train_norms=False)


def test_unknown_lm_family_names_the_supported_ones(tiny_bases):
    tower_path, _ = tiny_bases(TOWER, "llama")
    config = hf_vadapter.VisionAdapterConfig(
        vision_config=AutoConfig.from_pretrained(tower_path).to_dict(),
        text_config=dict(model_type="gpt_neox", hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, vocab_size=100),
        adapter_config=hf_vadapter.LlamaAdapterV2Config(),
        image_size=32,
        image_token_id=100,
    )
    with pytest.raises(hf_vadapter.UnsupportedArchitectureError) as error:
        hf_vadapter.VisionAdapterForCausalLM(config)
    assert all(model_type in str(error.value) for model_type in SUPPORTED_MODEL_TYPES)


# ------------------------------------------------------------------------------------------------ invariants


@pytest.mark.parametrize("lm", TRAINED_LMS)
def test_invariants_training_generation_and_save(tiny_bases, tmp_path, lm):
    tower_path, lm_path = tiny_bases(TOWER, lm)
    model, processor = build_model(tower_path, lm_path, hf_vadapter.LlamaAdapterV2Config())
    assert model.config.num_image_tokens == 0 and model.adapter.context_persists

    # Zero-init identity: exactly the frozen LM, for left-padded text alone and with images.
    text_only = processor(text=PROMPTS)
    with_images = processor(images=[random_image(0), random_image(1)], text=PROMPTS)
    assert text_only["attention_mask"][0].min() == 0
    for inputs in (text_only, with_images):
        with torch.no_grad():
            logits = model(**inputs).logits
        assert torch.equal(logits, _frozen_logits(lm_path, inputs))

    # Trainable parameters: the adapter plus the LM's norms, counted from the configs by hand.
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    groups = model.adapter.parameter_groups()
    assert trainable == set(groups["vision"]) | set(groups["instruction"])
    assert not set(groups["vision"]) & set(groups["instruction"])
    assert all(n.startswith("adapter.") or "norm" in n or ".ln_" in n for n in trainable)
    assert model.get_nb_trainable_parameters()[0] == _hand_count(model)

    # Toy tasks; each batch kind trains its own group only, and the loss falls for real.
    by_group = _groups(model)
    frozen_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("adapter.") and k not in trainable}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2, weight_decay=0.01)
    model.train()
    text_batch = processor(text=TEXT_TASK[0], text_target=TEXT_TASK[1])
    vision_before = _snapshot(by_group["vision"])
    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        loss = model(**text_batch).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(torch.equal(vision_before[n], p) for n, p in by_group["vision"].items())

    image_batch = processor(
        images=[_solid("red"), _solid("blue")] * 2, text=[QUESTION] * 4, text_target=["red.", "blue."] * 2
    )
    instruction_before = _snapshot(by_group["instruction"])
    losses = []
    for _ in range(25):
        optimizer.zero_grad()
        loss = model(**image_batch).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses
    assert all(torch.equal(instruction_before[n], p) for n, p in by_group["instruction"].items())
    assert any(not torch.equal(vision_before[n], p) for n, p in by_group["vision"].items())
    assert float(model.adapter.visual_gates.detach().abs().max()) > 0
    for key, value in model.state_dict().items():
        if key in frozen_before:
            assert torch.equal(frozen_before[key], value), key
    model.eval()

    # Gates open: cached == uncached (greedy and beam search), left-padded batch == single runs.
    _open_gates(model)
    with torch.no_grad():
        assert not torch.allclose(model(**with_images).logits, _frozen_logits(lm_path, with_images))
    cached = model.generate(**with_images, **SETTINGS)
    assert torch.equal(cached, model.generate(**with_images, use_cache=False, **SETTINGS))
    beams = model.generate(**with_images, num_beams=3, **SETTINGS)
    assert torch.equal(beams, model.generate(**with_images, num_beams=3, use_cache=False, **SETTINGS))
    for row, prompt in enumerate(PROMPTS):
        single = processor(images=[random_image(row)], text=[prompt])
        assert torch.equal(model.generate(**single, **SETTINGS)[0, -6:], cached[row, -6:])
        with torch.no_grad():
            torch.testing.assert_close(
                model(**with_images).logits[row, -1], model(**single).logits[0, -1], rtol=1e-4, atol=1e-4
            )

    # Save adapter-only and full; reloading gives the same logits here (and in a fresh process below).
    with torch.no_grad():
        expected = model(**with_images).logits
    adapter_dir, full_dir = tmp_path / "adapter", tmp_path / "full"
    model.save_adapter(adapter_dir, processor=processor)
    model.save_pretrained(full_dir, full=True)
    for folder in (adapter_dir, full_dir):
        reloaded = hf_vadapter.VisionAdapterForCausalLM.from_pretrained(folder)
        with torch.no_grad():
            assert torch.equal(reloaded(**with_images).logits, expected)
    torch.save(dict(with_images), tmp_path / "inputs.pt")
    torch.save(expected, tmp_path / "expected.pt")
    torch.save(cached, tmp_path / "generated.pt")
    SAVED[lm] = [str(adapter_dir), str(full_dir), str(tmp_path)]


def test_fresh_process_trust_remote_code_load():
    if len(SAVED) < len(TRAINED_LMS):
        pytest.skip("runs after the invariant tests above")
    script = f"""
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(1)  # as the expected logits were computed: the thread count can change a GEMM's last bits
    results = {{}}
    for lm, (adapter_dir, full_dir, root) in {json.dumps(SAVED)}.items():
        inputs = torch.load(root + "/inputs.pt")
        expected, generated = torch.load(root + "/expected.pt"), torch.load(root + "/generated.pt")
        for kind, folder in (("adapter", adapter_dir), ("full", full_dir)):
            model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
            with torch.no_grad():
                same_logits = bool(torch.equal(model(**inputs).logits, expected))
            tokens = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False)
            results[lm + "/" + kind] = [same_logits, bool(torch.equal(tokens, generated)), type(model.adapter).__module__]
    print(json.dumps(results))
    """
    results = run_without_hf_vadapter(script)
    assert len(results) == 2 * len(TRAINED_LMS)
    for key, (same_logits, same_tokens, module) in results.items():
        assert same_logits and same_tokens, key
        assert module.startswith("transformers_modules") and module.endswith("llama_adapter_v2"), (key, module)


@pytest.mark.parametrize("lm", ALL_LMS)
def test_every_family_zero_init_identity_and_cache(tiny_bases, lm):
    """All seven families; layer 0 gets both branches here (prompts in both layers), each with its own gate."""
    tower_path, lm_path = tiny_bases(TOWER, lm)
    model, processor = build_model(tower_path, lm_path, hf_vadapter.LlamaAdapterV2Config(num_prompt_layers=2))
    inputs = processor(images=[random_image(0), random_image(1)], text=PROMPTS)
    reference = _frozen_logits(lm_path, inputs)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, reference)
        assert torch.equal(model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits, reference)
    _open_gates(model)
    with torch.no_grad():
        assert (model(**inputs).logits - reference).abs().max() > 1e-2
    cached = model.generate(**inputs, **SETTINGS)
    assert torch.equal(cached, model.generate(**inputs, use_cache=False, **SETTINGS))


# ------------------------------------------------------------------------------------------------ joint training


def test_disjoint_groups_adamw_and_mixed_batches(tiny_bases):
    tower_path, lm_path = tiny_bases(TOWER, "llama")
    model, processor = build_model(tower_path, lm_path, hf_vadapter.LlamaAdapterV2Config())
    _open_gates(model, 0.3)  # so every parameter of a group gets a nonzero gradient
    by_group = _groups(model)
    norm_names = [n for n in by_group["instruction"] if n.startswith("language_model.")]
    assert norm_names and all(n.endswith("norm.weight") for n in norm_names)
    # weight_decay > 0 and momentum: a zero gradient would still move a parameter; a None gradient does not.
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    model.train()
    text = processor(text=TEXT_TASK[0], text_target=TEXT_TASK[1])
    images = processor(images=[_solid("red"), _solid("blue")], text=[QUESTION] * 2, text_target=["red.", "blue."])

    def steps(batch, count=2):
        for _ in range(count):
            optimizer.zero_grad()
            model(**batch).loss.backward()
            optimizer.step()

    for batch, trained, other in ((text, "instruction", "vision"), (images, "vision", "instruction"), (text, "instruction", "vision")):
        before = {g: _snapshot(by_group[g]) for g in by_group}
        steps(batch)
        assert all(p.grad is None for p in by_group[other].values()), other
        assert all(p.grad is not None for p in by_group[trained].values()), trained
        assert all(torch.equal(before[other][n], p) for n, p in by_group[other].items()), other
        assert all(not torch.equal(before[trained][n], p) for n, p in by_group[trained].items()), trained

    # The override trains everything on an image batch.
    optimizer.zero_grad()
    with model.adapter.gradient_group("all"):
        model(**images).loss.backward()
    assert all(p.grad is not None for group in by_group.values() for p in group.values())

    # A mixed batch: one forward refuses it; split by rows, each part trains its own group, and the two losses add up
    # to the whole batch's mean loss.
    mixed = processor(
        images=[[_solid("red")], [], [_solid("blue")]],
        text=[QUESTION, TEXT_TASK[0][1], QUESTION],
        text_target=["red.", "two.", "blue."],
    )
    has_image = [True, False, True]
    with pytest.raises(hf_vadapter.ImageTokenMismatchError, match="one image per sample"):
        model(**mixed)
    image_part, text_part = split_by_image(mixed, has_image)
    assert image_part["input_ids"].shape[0] == 2 and "pixel_values" not in text_part
    optimizer.zero_grad()
    joint_loss(model, mixed, has_image).backward()
    joint_grads = {n: p.grad.clone() for g in by_group.values() for n, p in g.items()}
    total = int((mixed["labels"][:, 1:] != -100).sum())
    for part, group in ((image_part, "vision"), (text_part, "instruction")):
        optimizer.zero_grad()
        model(**part, num_items_in_batch=total).loss.backward()
        for name, param in by_group[group].items():
            torch.testing.assert_close(param.grad, joint_grads[name], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        with model.adapter.gradient_group("all"):
            expected = sum(model(**part, num_items_in_batch=total).loss for part in (image_part, text_part))
        torch.testing.assert_close(joint_loss(model, mixed, has_image), expected)


def test_gradient_checkpointing_is_refused(tiny_bases):
    model, processor = build_model(*tiny_bases(TOWER, "llama"), hf_vadapter.LlamaAdapterV2Config())
    model.gradient_checkpointing_enable()
    model.train()
    with pytest.raises(hf_vadapter.AdapterConfigError, match="gradient checkpointing"):
        model(**processor(text=TEXT_TASK[0], text_target=TEXT_TASK[1]))


# ------------------------------------------------------------------------------------------------ PEFT LoRA


@pytest.mark.parametrize("lm,targets", [("llama", "q_proj|v_proj|o_proj"), ("gpt2", "c_attn|c_proj")])
def test_lora_on_the_lm_with_the_adapter_trains_saves_and_reloads(tiny_bases, tmp_path, lm, targets):
    """LoRA wraps the LM's linears (the output projection too); `modules_to_save=["adapter"]` trains a copy of the
    adapter, which drives the same hooks. Bias/scale stays on the base layer: y = s * (W x + b) + LoRA(x)."""
    tower_path, lm_path = tiny_bases(TOWER, lm)
    model, processor = build_model(tower_path, lm_path, hf_vadapter.LlamaAdapterV2Config())
    _open_gates(model)
    inputs = processor(images=[random_image(0), random_image(1)], text=PROMPTS)
    with torch.no_grad():
        plain = model(**inputs).logits
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=rf"language_model\..*\.({targets})", modules_to_save=["adapter"])
    peft_model = get_peft_model(model, lora)
    with torch.no_grad():  # LoRA starts at zero: same model, the gated branch now going through the LoRA wrapper
        torch.testing.assert_close(peft_model(**inputs).logits, plain, rtol=1e-5, atol=1e-5)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in trainable) and any("adapter.modules_to_save" in n for n in trainable)
    assert all("lora_" in n or "adapter.modules_to_save" in n for n in trainable)

    batch = processor(images=[_solid("red"), _solid("blue")], text=[QUESTION] * 2, text_target=["red.", "blue."])
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=3e-2)
    copy = peft_model.base_model.model.adapter.modules_to_save["default"]
    original = peft_model.base_model.model.adapter.original_module
    copy_gates, original_gates = copy.visual_gates.detach().clone(), original.visual_gates.detach().clone()
    peft_model.train()
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        with copy.gradient_group("all"):
            loss = peft_model(**batch).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    assert not torch.equal(copy.visual_gates, copy_gates) and torch.equal(original.visual_gates, original_gates)
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(**inputs).logits
    cached = peft_model.generate(**inputs, **SETTINGS)
    assert torch.equal(cached, peft_model.generate(**inputs, use_cache=False, **SETTINGS))

    peft_model.save_pretrained(tmp_path / "lora")
    fresh, _ = build_model(tower_path, lm_path, hf_vadapter.LlamaAdapterV2Config(), seed=1)
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "lora").eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs).logits, expected)


# ------------------------------------------------------------------------------------------------ experts


def test_expert_context_in_the_prompt(tiny_bases):
    tower_path, lm_path = tiny_bases(TOWER, "llama")
    model, processor = build_model(tower_path, lm_path, hf_vadapter.LlamaAdapterV2Config())
    _open_gates(model)
    seen = []

    def ocr(image):
        return "the sign says stop."

    def detector(image, prompt):
        seen.append(prompt)
        return f"{image.size[0]} pixels wide."

    image = _solid("red")
    contextual = add_expert_context(QUESTION, image, [ocr, lambda image: "  ", detector])
    assert contextual == DEFAULT_TEMPLATE.format(context="the sign says stop. 32 pixels wide.", prompt=QUESTION)
    assert seen == [QUESTION]
    assert add_expert_context(QUESTION, image, lambda image: "") == QUESTION

    # Another adapter's caption as the expert; the answer equals generating from the contextual prompt directly.
    captioner_model, captioner_processor = build_model(tower_path, lm_path, hf_vadapter.MLPProjectorConfig(), seed=3)
    captioner = adapter_captioner(captioner_model, captioner_processor, max_new_tokens=4, min_new_tokens=4)
    caption = captioner(image)
    assert isinstance(caption, str) and caption.strip()
    answers = generate_with_experts(model, processor, [image], [QUESTION], [captioner, ocr], **SETTINGS)
    direct = processor(images=[image], text=[add_expert_context(QUESTION, image, [captioner, ocr])])
    tokens = model.generate(**direct, **SETTINGS)
    assert answers == processor.batch_decode(tokens[:, direct["input_ids"].shape[1] :], skip_special_tokens=True)


# ------------------------------------------------------------------------------------------------ real size


def test_real_size_count_on_the_meta_device():
    """CLIP ViT-L/14 + Llama-2-7B shapes (the numbers in docs/llama_adapter_v2.md), built on `meta`."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "count_llama_adapter_v2.py"
    spec = importlib.util.spec_from_file_location("count_llama_adapter_v2", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    result = script.count(hf_vadapter.LlamaAdapterV2Config())
    d, ffn, layers, heads = 4096, 11008, 32, 32
    prompts = 30 * (10 * d + heads)
    visual = (1024 * d + d) + 2 * d + 20 * d + heads
    bias_scale = 2 * layers * (4 * d + 2 * ffn + d)
    norms = (2 * layers + 1) * d
    assert result["trainable"] == prompts + visual + bias_scale + norms == 8_504_288
    assert sum(result["groups"].values()) == result["trainable"]
    assert result["parts"]["biases"] + result["parts"]["scales"] + norms == 2_985_984  # 0.044% of the LM
