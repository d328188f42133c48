"""PaLM2-VAdapter: both stages on three tower x large-LM x tiny-LM triples, the handoff, options and PEFT interop.

Toy task: the caption of a solid-colour image is its colour. Stage 1 trains the attentional pooler and the tiny LM
(as the model's own LM) until it captions every colour; stage 2 starts its tiny LM from the stage-1 checkpoint and
trains resampler + tiny LM + linears so that the frozen large LM's loss falls, and falls only with the right image.
Every case checks: trainable-parameter count == a count computed by hand from the configs; frozen weights
bit-identical after training and every trainable tensor moved; cached == uncached generation; a left-padded batch ==
single runs; in-process and fresh-process (`trust_remote_code`, no hf_vadapter) loads give equal logits.
"""

import json
import shutil

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoModel

import hf_vadapter
from conftest import run_without_hf_vadapter
from hf_vadapter import PaLM2VAdapterConfig, VisionAdapterForCausalLM, VisionAdapterProcessor
from hf_vadapter.modeling.adapter_config import ADAPTER_WEIGHTS_NAME
from hf_vadapter.modeling.safe_io import load_safetensors

# (tower, large LM, tiny LM): every LM family plays both roles once.
CASES = [("vit", "llama", "gpt2"), ("clip", "gpt2", "qwen2"), ("siglip", "qwen2", "llama")]
IDS = ["-".join(case) for case in CASES]
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}
PROMPT = "describe the image."
TINY = dict(num_heads=4, num_visual_tokens=8)  # at the tiny LMs' width 32
STAGE2 = dict(resampler_hidden_size=32, **TINY)
STAGE1_FOLDERS = {}  # case id -> (stage-1 adapter folder, the trained stage-1 model)
SAVED = {}  # "case/kind" -> [folder, inputs path, expected logits path, generated tokens path]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: one thread is faster than several, and kinder to a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _images():
    return [Image.new("RGB", (32, 32), colour) for colour in COLOURS.values()]


def _train_batch(processor, images=None):
    images = _images() if images is None else images
    return processor(images=images, text=[PROMPT] * 4, text_target=[f"{name}." for name in COLOURS])


def _train(model, batch, steps: int, lr: float):
    """AdamW on the trainable parameters; returns (loss before, loss after) measured in eval mode."""
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.eval()
    with torch.no_grad():
        before = model(**batch).loss.item()
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after = model(**batch).loss.item()
    return before, after


def _snapshot(model):
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _check_only_trainable_moved(model, before):
    trainable = {p.data_ptr() for p in model.parameters() if p.requires_grad}  # tied weights share storage
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in trainable:
            assert not torch.equal(before[name], tensor), f"trainable {name} did not move"
        else:  # frozen parameters (and buffers)
            assert torch.equal(before[name], tensor), f"frozen {name} changed"


# ------------------------------------------------------------------------------------------ counts by hand


def _lm_body_params(config) -> int:
    """Parameters of an LM's decoder body without its token embedding, by hand from the config."""
    d, layers = config.hidden_size, config.num_hidden_layers
    if config.model_type == "gpt2":
        inner = config.n_inner or 4 * d
        per_layer = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * inner + inner) + (inner * d + d)
        return config.n_positions * d + layers * per_layer + 2 * d
    assert config.model_type in ("llama", "qwen2"), config.model_type
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    q, kv = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    attention = d * q + 2 * d * kv + q * d + (q + 2 * kv if config.model_type == "qwen2" else 0)
    per_layer = attention + 3 * d * config.intermediate_size + 2 * d
    return layers * per_layer + d


def _lm_all_params(config) -> int:
    embedding = config.vocab_size * config.hidden_size
    head = 0 if config.tie_word_embeddings else embedding
    return _lm_body_params(config) + embedding + head


def expected_trainable(adapter: PaLM2VAdapterConfig, tower_width: int, text_config, tiny_config=None) -> int:
    """The trainable-parameter count of a PaLM2-VAdapter model, computed by hand from the configs."""
    c = tower_width * len(adapter.feature_layers)
    q, frames = adapter.num_visual_tokens, adapter.max_frames
    if adapter.stage == 1:
        d = text_config.hidden_size  # the model's LM is the tiny LM, and all of it trains
        pooler = q * d + frames * c + 2 * c + (d * d + d) + (c * 2 * d + 2 * d) + (d * d + d) + 2 * d
        return pooler + _lm_all_params(text_config)
    dt, dl = tiny_config.hidden_size, text_config.hidden_size
    out = dt * dl + dl
    if adapter.front == "self_attention":
        return (c * dt + dt) + frames * dt + q * dt + _lm_body_params(tiny_config) + out
    h, f = adapter.resampler_hidden_size, adapter.ffn_mult
    layer = 4 * h + h * h + 2 * h * h + h * h + 2 * h + 2 * f * h * h
    resampler = q * h + frames * h + adapter.resampler_depth * layer
    return (c * h + h) + resampler + (h * dt + dt) + _lm_body_params(tiny_config) + out


def _count(model) -> int:
    return model.get_nb_trainable_parameters()[0]


# ------------------------------------------------------------------------------------------ shared checks


def _check_generation(model, processor):
    """Cached == uncached generation, and a left-padded batch == each prompt alone."""
    prompts = [PROMPT, "what color is the circle? " + PROMPT]
    images = _images()[:2]
    inputs = processor(images=images, text=prompts)
    assert inputs["attention_mask"][0].min() == 0, "the batch must be left-padded for this check"
    settings = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False)
    cached = model.generate(**inputs, **settings)
    assert torch.equal(cached, model.generate(**inputs, use_cache=False, **settings))
    for row, prompt in enumerate(prompts):
        single = processor(images=[images[row]], text=[prompt])
        assert torch.equal(model.generate(**single, **settings)[0, -5:], cached[row, -5:])
        with torch.no_grad():
            torch.testing.assert_close(
                model(**inputs).logits[row, -1], model(**single).logits[0, -1], rtol=1e-4, atol=1e-4
            )
    return inputs, cached


def _check_save_load(model, processor, inputs, generated, tmp_path, case: str, kinds=("adapter",)):
    with torch.no_grad():
        expected = model(**inputs).logits
    torch.save(dict(inputs), tmp_path / "inputs.pt")
    torch.save(expected, tmp_path / "expected.pt")
    torch.save(generated, tmp_path / "generated.pt")
    for kind in kinds:
        folder = tmp_path / kind
        if kind == "adapter":
            model.save_adapter(folder, processor=processor)
            assert not (folder / "model.safetensors").exists()
        else:
            model.save_pretrained(folder, full=True)
        reloaded = VisionAdapterForCausalLM.from_pretrained(folder)
        with torch.no_grad():
            torch.testing.assert_close(reloaded(**inputs).logits, expected, rtol=0, atol=0)
        SAVED[f"{case}/{kind}"] = [str(folder), str(tmp_path)]
    return expected


# ------------------------------------------------------------------------------------------ stage 1


@pytest.mark.parametrize("tower,large,tiny", CASES, ids=IDS)
def test_stage1_tiny_lm_learns_to_caption(tiny_bases, tmp_path, tower, large, tiny):
    tower_path, tiny_path = tiny_bases(tower, tiny)
    torch.manual_seed(0)
    config = PaLM2VAdapterConfig(stage=1, **TINY)
    model = VisionAdapterForCausalLM.from_vision_text_pretrained(tower_path, tiny_path, config)
    processor = VisionAdapterProcessor.for_model(model)
    assert model.config.num_image_tokens == 8
    # Trainable: the pooler and the whole tiny LM (it is the model's LM here); the tower stays frozen.
    expected = expected_trainable(config, model.config.vision_config.hidden_size, model.config.text_config)
    assert _count(model) == expected
    assert not any(p.requires_grad for p in model.vision_tower.parameters())
    assert all(p.requires_grad for p in model.language_model.parameters())

    before = _snapshot(model)
    loss_before, loss_after = _train(model, _train_batch(processor), steps=30, lr=3e-3)
    assert loss_after < 0.05 * loss_before, (loss_before, loss_after)
    _check_only_trainable_moved(model, before)

    # A stage-1 model is an ordinary captioner: greedy decoding names each colour.
    inputs = processor(images=_images(), text=[PROMPT] * 4)
    generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    captions = processor.batch_decode(generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert [caption[:3] for caption in captions] == [name[:3] for name in COLOURS], captions

    inputs, generated = _check_generation(model, processor)
    case = "-".join((tower, large, tiny))
    _check_save_load(model, processor, inputs, generated, tmp_path, f"{case}/stage1")
    # The adapter-only checkpoint holds the pooler and every tiny-LM parameter.
    keys = set(load_safetensors(tmp_path / "adapter" / ADAPTER_WEIGHTS_NAME))
    assert {f"language_model.{name}" for name, _ in model.language_model.named_parameters()} <= keys
    STAGE1_FOLDERS[case] = (tmp_path / "adapter", model)


# ------------------------------------------------------------------------------------------ stage 2


@pytest.mark.parametrize("tower,large,tiny", CASES, ids=IDS)
def test_stage2_from_stage1_aligns_the_frozen_large_lm(tiny_bases, tmp_path, tower, large, tiny):
    case = "-".join((tower, large, tiny))
    if case not in STAGE1_FOLDERS:
        pytest.skip("needs the stage-1 test of the same case")
    stage1_folder, stage1_model = STAGE1_FOLDERS[case]
    tower_path, large_path = tiny_bases(tower, large)

    # The handoff: one call builds the stage-2 config whose tiny LM starts from the stage-1 checkpoint.
    config = PaLM2VAdapterConfig.from_stage1(stage1_folder, resampler_hidden_size=32)
    assert (config.stage, config.tiny_lm_init, config.num_visual_tokens) == (2, "stage1", 8)
    torch.manual_seed(0)
    model = VisionAdapterForCausalLM.from_vision_text_pretrained(tower_path, large_path, config)
    processor = VisionAdapterProcessor.for_model(model)

    # The tiny LM's weights are the stage-1 ones, exactly (the token embedding is not part of the adapter).
    stage1_body = stage1_model.language_model.base_model
    saved = load_safetensors(stage1_folder / ADAPTER_WEIGHTS_NAME)
    prefix = f"language_model.{stage1_model.language_model.base_model_prefix}."
    tiny_params = dict(model.adapter.tiny_lm.named_parameters())
    assert tiny_params and set(tiny_params) == {
        name for name, _ in stage1_body.named_parameters() if "embed_tokens" not in name and "wte" not in name
    }
    for name, parameter in tiny_params.items():
        assert torch.equal(parameter, stage1_body.get_parameter(name)), name
        assert torch.equal(parameter, saved[prefix + name]), name

    tiny_config = AutoConfig.for_model(**config.tiny_lm_config)
    expected = expected_trainable(config, model.config.vision_config.hidden_size, model.config.text_config, tiny_config)
    assert _count(model) == expected
    assert {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad} == {"adapter"}

    before = _snapshot(model)
    batch = _train_batch(processor)
    loss_before, loss_after = _train(model, batch, steps=120, lr=3e-3)
    assert loss_after < 0.55 * loss_before, (loss_before, loss_after)
    # The drop comes from the images: pairing each caption with another colour's image costs a lot more.
    with torch.no_grad():
        shuffled = model(**_train_batch(processor, _images()[1:] + _images()[:1])).loss.item()
    assert shuffled > loss_after + 2.0, (loss_after, shuffled)
    _check_only_trainable_moved(model, before)

    inputs, generated = _check_generation(model, processor)
    _check_save_load(model, processor, inputs, generated, tmp_path, f"{case}/stage2", kinds=("adapter", "full"))


def test_fresh_process_trust_remote_code_loads_both_stages():
    if len(SAVED) < 3 * len(CASES):
        pytest.skip("runs after both stages of every case")
    script = f"""
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(1)  # as the expected logits were computed: bit-equality needs the same kernels
    results = {{}}
    for key, (folder, root) in {json.dumps(SAVED)}.items():
        inputs = torch.load(root + "/inputs.pt")
        expected = torch.load(root + "/expected.pt")
        generated = torch.load(root + "/generated.pt")
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
        with torch.no_grad():
            diff = (model(**inputs).logits - expected).abs().max().item()
        tokens = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
        results[key] = [diff, bool(torch.equal(tokens, generated)), type(model.adapter).__module__]
    print(json.dumps(results))
    """
    results = run_without_hf_vadapter(script)
    assert set(results) == set(SAVED)
    for key, (diff, same_tokens, module) in results.items():
        assert diff == 0.0, key
        assert same_tokens, key
        assert module.startswith("transformers_modules") and module.endswith("palm2_vadapter"), (key, module)


# ------------------------------------------------------------------------------------------ options


def test_self_attention_front_pretrained_init_and_video(tiny_bases, tmp_path):
    tower_path, large_path = tiny_bases("vit", "llama")
    tiny_path = str(tmp_path / "tiny-lm")  # a copy, deleted below: reloading must not need it
    shutil.copytree(tiny_bases("vit", "qwen2")[1], tiny_path)
    config = PaLM2VAdapterConfig(tiny_lm_name_or_path=tiny_path, front="self_attention", max_frames=4, **TINY)
    assert config.tiny_lm_init == "pretrained" and config.tiny_lm_config["model_type"] == "qwen2"
    torch.manual_seed(0)
    model = VisionAdapterForCausalLM.from_vision_text_pretrained(tower_path, large_path, config)
    processor = VisionAdapterProcessor.for_model(model)
    tiny_config = AutoConfig.for_model(**config.tiny_lm_config)
    assert _count(model) == expected_trainable(config, 32, model.config.text_config, tiny_config)
    assert not hasattr(model.adapter, "resampler")

    # "pretrained": the tiny LM body is the checkpoint's, exactly.
    pretrained = AutoModel.from_pretrained(tiny_path)
    for name, parameter in model.adapter.tiny_lm.named_parameters():
        assert torch.equal(parameter, pretrained.get_parameter(name)), name

    # Video [B, T, C, H, W]: every frame counts (time embedding), and the query outputs train.
    frames = [_images()[:3], _images()[1:]]
    video = processor(videos=frames, text=[PROMPT] * 2, text_target=["red.", "blue."])
    assert video["pixel_values"].shape[:2] == (2, 3)
    model.train()
    loss = model(**video).loss
    loss.backward()
    assert torch.isfinite(loss)
    for name in ("queries", "time_embedding", "input_projection.weight", "output_projection.weight"):
        assert model.adapter.get_parameter(name).grad.abs().sum() > 0, name
    model.eval()
    with pytest.raises(hf_vadapter.InvalidImageError, match="max_frames"):
        model(**processor(videos=[_images() + _images()[:1]], text=[PROMPT]))

    # The saved adapter rebuilds its tiny LM from tiny_lm_config and its own weights: the checkpoint can go.
    with torch.no_grad():
        expected = model(**video).logits
    model.save_adapter(tmp_path / "adapter")
    shutil.rmtree(tiny_path)
    reloaded = VisionAdapterForCausalLM.from_pretrained(tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**video).logits, expected, rtol=0, atol=0)


def test_image_repeated_to_frames_equals_that_video_and_random_init(tiny_bases):
    """`repeat_image_frames=3`: an image gives what the same image as a 3-frame video gives; also a 2-layer
    resampler with a random tiny LM built from `tiny_lm_config` alone."""
    tower_path, large_path = tiny_bases("clip", "qwen2")
    tiny_config = AutoConfig.from_pretrained(tiny_bases("clip", "llama")[1]).to_dict()
    config = PaLM2VAdapterConfig(
        tiny_lm_init="random", tiny_lm_config=tiny_config, resampler_depth=2, repeat_image_frames=3, **STAGE2
    )
    torch.manual_seed(0)
    model = VisionAdapterForCausalLM.from_vision_text_pretrained(tower_path, large_path, config)
    processor = VisionAdapterProcessor.for_model(model)
    tiny = AutoConfig.for_model(**tiny_config)
    assert _count(model) == expected_trainable(config, 32, model.config.text_config, tiny)
    # Learn a non-zero time embedding first, so that the frame count matters.
    with torch.no_grad():
        model.adapter.resampler.time_embedding.normal_()
    image = _images()[0]
    as_image = processor(images=[image], text=[PROMPT])
    as_video = processor(videos=[[image] * 3], text=[PROMPT])
    as_short_video = processor(videos=[[image] * 2], text=[PROMPT])
    with torch.no_grad():
        logits = model(**as_image).logits
        # (not bit-equal: the tower runs 1 frame vs a batch of 3)
        torch.testing.assert_close(logits, model(**as_video).logits, rtol=1e-5, atol=1e-5)
        assert (logits - model(**as_short_video).logits).abs().max() > 1e-3


def test_config_errors_and_round_trip(tiny_bases, tmp_path):
    with pytest.raises(hf_vadapter.AdapterConfigError, match="from_stage1"):
        PaLM2VAdapterConfig()
    with pytest.raises(hf_vadapter.AdapterConfigError, match="stage 1 the tiny LM is the model's own LM"):
        PaLM2VAdapterConfig(stage=1, tiny_lm_name_or_path="x")
    with pytest.raises(hf_vadapter.AdapterConfigError, match="front"):
        PaLM2VAdapterConfig(tiny_lm_init="random", tiny_lm_config={"model_type": "llama"}, front="conv")
    with pytest.raises(hf_vadapter.AdapterConfigError, match="stage must be 1 or 2"):
        PaLM2VAdapterConfig(stage=3)
    config = PaLM2VAdapterConfig(tiny_lm_init="random", tiny_lm_config={"model_type": "llama", "hidden_size": 32})
    assert hf_vadapter.modeling.adapters.adapter_config_from_dict(config.to_dict()) == config

    # from_stage1 refuses a checkpoint that is not a stage-1 PaLM2-VAdapter, and a folder that is none at all.
    tower_path, lm_path = tiny_bases("vit", "llama")
    model = VisionAdapterForCausalLM.from_vision_text_pretrained(
        tower_path, lm_path, hf_vadapter.MLPProjectorConfig(num_layers=1)
    )
    model.save_adapter(tmp_path / "mlp")
    with pytest.raises(hf_vadapter.AdapterConfigError, match="not a stage-1 PaLM2-VAdapter"):
        PaLM2VAdapterConfig.from_stage1(tmp_path / "mlp")
    with pytest.raises(hf_vadapter.CheckpointError, match="save_adapter"):
        PaLM2VAdapterConfig.from_stage1(tmp_path)
    # A stage-1 pooler works at the tiny LM's width, which the heads must divide.
    with pytest.raises(hf_vadapter.AdapterConfigError, match="num_heads"):
        VisionAdapterForCausalLM.from_vision_text_pretrained(
            tower_path, lm_path, PaLM2VAdapterConfig(stage=1, num_heads=5)
        )


# ------------------------------------------------------------------------------------------ PEFT


def test_lora_on_the_large_lm_with_the_adapter_as_modules_to_save(tiny_bases, tmp_path):
    """LoRA on the large LM's q/v projections only; the whole PaLM2-VAdapter trains as `modules_to_save`.

    The target is a regex anchored at `language_model.`: the plain list ["q_proj", "v_proj"] would also put LoRA on
    the tower's q/v projections (CLIP, SigLIP). PEFT never targets modules inside `modules_to_save`, so the tiny LM
    (here a Llama, with its own q_proj/v_proj) is trained fully, not through LoRA.
    """
    peft = pytest.importorskip("peft")
    tower_path, large_path = tiny_bases("siglip", "qwen2")
    _, tiny_path = tiny_bases("siglip", "llama")
    config = PaLM2VAdapterConfig(tiny_lm_name_or_path=tiny_path, **STAGE2)
    torch.manual_seed(0)
    model = VisionAdapterForCausalLM.from_vision_text_pretrained(tower_path, large_path, config)
    processor = VisionAdapterProcessor.for_model(model)
    adapter_count = _count(model)
    lora = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=r"language_model\..*\.(q_proj|v_proj)", modules_to_save=["adapter"]
    )
    peft_model = peft.get_peft_model(model, lora)
    lora_modules = [name for name, _ in peft_model.named_modules() if name.endswith(".lora_A")]
    large = model.config.text_config
    assert len(lora_modules) == 2 * large.num_hidden_layers
    assert all(".language_model." in name for name in lora_modules)
    head_dim = large.hidden_size // large.num_attention_heads
    q_out, v_out = large.num_attention_heads * head_dim, large.num_key_value_heads * head_dim
    lora_count = large.num_hidden_layers * 4 * (2 * large.hidden_size + q_out + v_out)
    assert peft_model.get_nb_trainable_parameters()[0] == adapter_count + lora_count

    batch = _train_batch(processor)
    loss_before, loss_after = _train(peft_model, batch, steps=40, lr=3e-3)
    assert loss_after < 0.8 * loss_before, (loss_before, loss_after)
    trained_tiny = peft_model.base_model.model.adapter.modules_to_save["default"].tiny_lm
    original_tiny = peft_model.base_model.model.adapter.original_module.tiny_lm
    assert not torch.equal(trained_tiny.layers[0].self_attn.q_proj.weight, original_tiny.layers[0].self_attn.q_proj.weight)

    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(**batch).logits
    peft_model.save_pretrained(tmp_path / "lora")
    torch.manual_seed(1)  # the reload must not depend on the fresh adapter's init
    base = VisionAdapterForCausalLM.from_vision_text_pretrained(tower_path, large_path, config)
    reloaded = peft.PeftModel.from_pretrained(base, tmp_path / "lora").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, expected, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ real-size count


def real_size_model():
    """SigLIP-B/16 + SmolLM2-135M (tiny LM) + Qwen2.5-1.5B (large LM) from hand-written configs, on the meta device."""
    from transformers import LlamaConfig, Qwen2Config, SiglipVisionConfig

    tower = SiglipVisionConfig(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224,
        patch_size=16,
    )
    smollm2 = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, max_position_embeddings=8192, tie_word_embeddings=True,
    )
    qwen = Qwen2Config(
        vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
        num_key_value_heads=2, tie_word_embeddings=True,
    )
    adapter = PaLM2VAdapterConfig(tiny_lm_init="random", tiny_lm_config=smollm2.to_dict())
    config = hf_vadapter.VisionAdapterConfig(
        vision_config=tower, text_config=qwen, adapter_config=adapter, image_size=224, image_token_id=151936
    )
    with torch.device("meta"):
        model = VisionAdapterForCausalLM(config)
    return model, adapter, tower, qwen, smollm2


def test_real_size_trainable_count_from_configs():
    model, adapter, tower, qwen, smollm2 = real_size_model()
    trainable = _count(model)
    assert trainable == expected_trainable(adapter, tower.hidden_size, qwen, smollm2) == 115_261_056
    assert sum(p.numel() for p in model.adapter.tiny_lm.parameters()) == _lm_body_params(smollm2) == 106_203_456
