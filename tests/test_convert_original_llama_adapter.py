"""Official LLaMA-Adapter V2 multimodal checkpoints -> hf_vadapter: synthetic state dicts in the release layout.

A release is `{"model": {...}, "config": {"w_bias": True, "w_lora": False, "lora_rank": 16}}` with the keys that
OpenGVLab/LLaMA-Adapter's `util/extract_adapter_from_checkpoint.py` lists (see conversion/original_llama_adapter.py).
Here the LLaMA is tiny: 2 layers, width 32, 4 heads, FFN 64; query_layer K = 1, query_len P = 3.
"""

import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaConfig, LlamaRotaryEmbedding, apply_rotary_pos_emb

import hf_vadapter
from hf_vadapter.conversion.original_llama_adapter import (
    convert_llama_adapter_v2_checkpoint,
    convert_llama_adapter_v2_state_dict,
    meta_to_hf_rotary_rows,
)

pytest.importorskip("hf_vadapter.modeling.llama_adapter_v2")

LAYERS, WIDTH, HEADS, FFN, K, P = 2, 32, 4, 64, 1, 3


def official_state(seed: int = 0, visual: bool = True):
    generator = torch.Generator().manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=generator)  # noqa: E731
    state = {"adapter_query.weight": randn(K * P, WIDTH), "llama.norm.weight": randn(WIDTH)}
    for i in range(LAYERS):
        prefix = f"llama.layers.{i}."
        state[prefix + "attention.gate"] = randn(1, HEADS, 1, 1)
        for name, size in (("attention.wq.bias", WIDTH), ("attention.wo.bias", WIDTH), ("feed_forward.w1.bias", FFN),
                           ("feed_forward.w2.bias", WIDTH), ("feed_forward.w3.bias", FFN),
                           ("attention_norm.weight", WIDTH), ("ffn_norm.weight", WIDTH)):
            state[prefix + name] = randn(size)
    if visual:  # the visual path, in the release's names (v_embed_dim 8, one block, CLIP output width 8)
        for name, shape in (("clip_proj.weight", (8, 8)), ("clip_proj.bias", (8,)), ("clip_proj_norm.weight", (8,)),
                            ("clip_proj_norm.bias", (8,)), ("visual_query.weight", (P, 8)),
                            ("visual_blocks.0.norm1.weight", (8,)), ("visual_blocks.0.attn.qkv.weight", (24, 8)),
                            ("visual_blocks.0.mlp.fc2.bias", (8,)), ("visual_proj.weight", (WIDTH, 8)),
                            ("visual_proj.bias", (WIDTH,)), ("visual_proj_norm.weight", (WIDTH,)),
                            ("visual_proj_norm.bias", (WIDTH,))):
            state[name] = randn(*shape)
    return state


RELEASE_CONFIG = {"w_bias": True, "w_lora": False, "lora_rank": 16}


def test_the_visual_path_is_refused_unless_dropped_on_purpose():
    with pytest.raises(hf_vadapter.CheckpointError, match="visual path .* has no counterpart"):
        convert_llama_adapter_v2_state_dict(official_state(), RELEASE_CONFIG, prompt_length=P)
    converted = convert_llama_adapter_v2_state_dict(official_state(), RELEASE_CONFIG, prompt_length=P,
                                                    drop_visual_path=True)
    dropped = {k for k, why in converted.ignored.items() if "drop_visual_path" in why}
    assert dropped == {k for k in official_state() if not k.startswith(("llama.", "adapter_query"))}
    assert "llama.layers.0.attention.gate" in converted.ignored  # layer 0 has no prompt: the original never reads it
    config = converted.adapter_config
    assert (config.num_prompt_layers, config.num_prompt_tokens, config.use_early_fusion) == (K, P, False)
    assert config.use_bias_scale and config.train_norms


def test_every_tensor_lands_where_it_should(tiny_bases, tmp_path):
    state = official_state()
    torch.save({"model": state, "config": RELEASE_CONFIG}, tmp_path / "BIAS-7B.pth")
    converted = convert_llama_adapter_v2_checkpoint(
        tmp_path / "BIAS-7B.pth", tmp_path / "converted", *tiny_bases("vit", "llama"), prompt_length=P,
        drop_visual_path=True,
    )
    model = hf_vadapter.VisionAdapterForCausalLM.from_adapter_pretrained(tmp_path / "converted")
    adapter, lm = model.adapter, model.language_model

    assert torch.equal(adapter.prompts, state["adapter_query.weight"].reshape(K, P, WIDTH))
    assert torch.equal(adapter.prompt_gates[0], state["llama.layers.1.attention.gate"].reshape(HEADS))
    for i in range(LAYERS):
        bias = lambda module: adapter.linear_bias[f"model-layers-{i}-{module}"]  # noqa: E731
        scale = lambda module: adapter.linear_scale[f"model-layers-{i}-{module}"]  # noqa: E731
        official = lambda name: state[f"llama.layers.{i}.{name}"]  # noqa: E731
        assert torch.equal(bias("self_attn-q_proj"), meta_to_hf_rotary_rows(official("attention.wq.bias"), HEADS))
        assert torch.equal(bias("self_attn-o_proj"), official("attention.wo.bias"))
        assert torch.equal(bias("mlp-gate_proj"), official("feed_forward.w1.bias"))
        assert torch.equal(bias("mlp-up_proj"), official("feed_forward.w3.bias"))
        assert torch.equal(bias("mlp-down_proj"), official("feed_forward.w2.bias"))
        for module in ("self_attn-k_proj", "self_attn-v_proj"):  # no bias in the original: identity
            assert not bias(module).any()
        for module in ("self_attn-q_proj", "self_attn-k_proj", "self_attn-v_proj", "self_attn-o_proj",
                       "mlp-gate_proj", "mlp-up_proj", "mlp-down_proj"):
            assert torch.equal(scale(module), torch.ones_like(scale(module)))
        assert torch.equal(lm.model.layers[i].input_layernorm.weight, official("attention_norm.weight"))
        assert torch.equal(lm.model.layers[i].post_attention_layernorm.weight, official("ffn_norm.weight"))
    assert torch.equal(lm.model.norm.weight, state["llama.norm.weight"])
    converted_keys = set(converted.tensors)
    assert converted_keys <= set(model.adapter_state_dict())
    assert not (set(model.adapter_state_dict()) - converted_keys - {
        k for k in model.adapter_state_dict() if "linear_scale" in k or "k_proj" in k or "v_proj" in k})

    tokenizer = hf_vadapter.VisionAdapterProcessor.for_model(model).tokenizer
    with torch.no_grad():
        logits = model(**tokenizer(["describe the image."], return_tensors="pt")).logits
    assert torch.isfinite(logits).all()


def test_q_bias_permutation_keeps_attention_scores():
    """Meta's interleaved rotary on (W x + b) equals HF's half rotary on permuted (W x + b): same q.k scores."""
    torch.manual_seed(0)
    seq, head_dim = 5, WIDTH // HEADS
    x = torch.randn(seq, WIDTH, dtype=torch.float64)
    wq, wk, bq = torch.randn(WIDTH, WIDTH, dtype=torch.float64), torch.randn(WIDTH, WIDTH, dtype=torch.float64), torch.randn(WIDTH, dtype=torch.float64)

    # Meta: consecutive pairs of each head rotate by position * theta_i.
    theta = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    freqs = torch.polar(torch.ones(seq, head_dim // 2, dtype=torch.float64), torch.outer(torch.arange(seq, dtype=torch.float64), theta))

    def meta_rotate(t):  # [S, D] -> [H, S, hd]
        pairs = torch.view_as_complex(t.reshape(seq, HEADS, head_dim // 2, 2).contiguous())
        return torch.view_as_real(pairs * freqs[:, None]).reshape(seq, HEADS, head_dim).transpose(0, 1)

    meta_scores = meta_rotate(x @ wq.T + bq) @ meta_rotate(x @ wk.T).transpose(-1, -2)

    # HF: the converted q/k rows and the converted bias, rotated by transformers' own Llama rotary code.
    rotary = LlamaRotaryEmbedding(LlamaConfig(hidden_size=WIDTH, num_attention_heads=HEADS, max_position_embeddings=64))
    cos, sin = rotary(x.float()[None], torch.arange(seq)[None])

    def hf_heads(t):  # [S, D] -> [1, H, S, hd]
        return t.reshape(1, seq, HEADS, head_dim).transpose(1, 2)

    q_hf = hf_heads(x @ meta_to_hf_rotary_rows(wq, HEADS).T + meta_to_hf_rotary_rows(bq, HEADS))
    k_hf = hf_heads(x @ meta_to_hf_rotary_rows(wk, HEADS).T)
    q_rot, k_rot = apply_rotary_pos_emb(q_hf, k_hf, cos.double(), sin.double())
    # transformers computes cos/sin in float32: agreement to ~1e-5 relative, against O(1) for a wrong layout.
    torch.testing.assert_close((q_rot @ k_rot.transpose(-1, -2))[0], meta_scores, rtol=1e-5, atol=1e-4)

    q_unpermuted = hf_heads(x @ meta_to_hf_rotary_rows(wq, HEADS).T + bq)  # the bias left in Meta's order
    q_bad, _ = apply_rotary_pos_emb(q_unpermuted, k_hf, cos.double(), sin.double())
    assert ((q_bad @ k_rot.transpose(-1, -2))[0] - meta_scores).abs().max() > 0.1


def test_caption_style_checkpoint_without_biases_and_norms():
    """A pretrain-phase release (gates, prompts, visual path; no biases or norms) converts prompts and gates only."""
    state = {k: v for k, v in official_state().items() if k.startswith(("adapter_query", "visual", "clip")) or k.endswith("gate")}
    converted = convert_llama_adapter_v2_state_dict(state, {}, prompt_length=P, drop_visual_path=True)
    assert not converted.adapter_config.use_bias_scale and not converted.adapter_config.train_norms
    assert set(converted.tensors) == {"adapter.prompts", "adapter.prompt_gates"}


@pytest.mark.parametrize(
    "change, config, message",
    [
        (lambda s: s.update({"llama.layers.0.attention.lora_wq_l1.weight": torch.zeros(16, WIDTH)}), {}, "LoRA"),
        (lambda s: None, {"w_lora": True}, "LoRA"),
        (lambda s: s.update({"llama.layers.1.attention.new_gate": torch.ones(1, 1, 1, 1)}), {}, "LoRA"),
        (lambda s: s.update({"llama.layers.0.attention.wk.bias": torch.zeros(WIDTH)}), {}, "does not know"),
        (lambda s: s.update({"tok_embeddings.weight": torch.zeros(4, WIDTH)}), {}, "does not know"),
        (lambda s: s.pop("llama.layers.1.feed_forward.w2.bias"), {}, r"Layer 1 lacks \['feed_forward.w2.bias'\]"),
        (lambda s: s.update({"llama.layers.1.feed_forward.w3.bias": torch.zeros(FFN + 1)}), {}, "has shape"),
        (lambda s: s.update({"adapter_query.weight": torch.zeros(K * P + 1, WIDTH)}), {}, "not a multiple"),
        (lambda s: s.pop("llama.norm.weight"), {}, "no llama.norm.weight"),
    ],
)
def test_refuses_what_it_cannot_map(change, config, message):
    state = official_state()
    change(state)
    with pytest.raises(hf_vadapter.VisionAdapterError, match=message):
        convert_llama_adapter_v2_state_dict(state, config, prompt_length=P, drop_visual_path=True)


def test_refuses_an_lm_of_another_width_naming_both_sides(tiny_bases, tmp_path):
    state = official_state(visual=False)
    state = {k: torch.zeros(K * P, 48) if k == "adapter_query.weight" else v for k, v in state.items()}
    state = {k: (torch.zeros(48) if v.shape == (WIDTH,) else v) for k, v in state.items()}
    state = {k: (torch.zeros(1, 4, 1, 1) if k.endswith("gate") else v) for k, v in state.items()}
    torch.save({"model": state, "config": RELEASE_CONFIG}, tmp_path / "wide.pth")
    with pytest.raises(hf_vadapter.BackboneMismatchError, match=r"adapter.prompts: \(1, 3, 48\) vs \(1, 3, 32\)"):
        convert_llama_adapter_v2_checkpoint(tmp_path / "wide.pth", tmp_path / "out", *tiny_bases("vit", "llama"),
                                            prompt_length=P)
