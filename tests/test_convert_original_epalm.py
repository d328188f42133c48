"""Official eP-ALM checkpoints -> hf_vadapter: synthetic state dicts in the official key layout and shapes.

The official file is `{"model": {connector.*, prompt_module.prefix_embedding.*}, "config": {...}, "optimizer": ...,
"epoch": ...}` (mshukor/eP-ALM, see conversion/original_epalm.py). The LM here is a tiny OPT whose
`word_embed_proj_dim` (16) differs from its hidden size (32), as in opt-350m: the official prompt lives in the
former, the connectors write the latter.
"""

import argparse
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import hf_vadapter
from conftest import random_image
from hf_vadapter.conversion.original_checkpoint import add_convert_original_arguments, run_convert_original
from hf_vadapter.conversion.original_epalm import convert_epalm_checkpoint, convert_epalm_state_dict
from tiny_models import build_tokenizer, save_tower

VISION, LM, WORD, HIDDEN, PROMPT = 32, 32, 16, 24, 3


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """(tiny ViT folder, tiny OPT folder with word_embed_proj_dim != hidden_size)."""
    root = tmp_path_factory.mktemp("epalm_bases")
    tower = save_tower("vit", root / "vit")
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    config = AutoConfig.for_model(
        "opt", vocab_size=len(tokenizer), hidden_size=LM, word_embed_proj_dim=WORD, num_hidden_layers=4,
        num_attention_heads=4, ffn_dim=64, max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, init_std=0.3,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(root / "opt")
    tokenizer.save_pretrained(root / "opt")
    return str(tower), str(root / "opt")


def official_state(levels: int = 2, shared: bool = False, mlp: bool = True, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=generator)  # noqa: E731
    state = {}
    for j in range(1 if shared else levels):
        state[f"connector.{j}.weight"] = randn(LM, VISION)
        state[f"connector.{j}.bias"] = randn(LM)
    state["prompt_module.prefix_embedding.0.weight"] = randn(PROMPT, WORD)
    if mlp:
        state["prompt_module.prefix_embedding.1.weight"] = randn(HIDDEN, WORD)
        state["prompt_module.prefix_embedding.1.bias"] = randn(HIDDEN)
        state["prompt_module.prefix_embedding.3.weight"] = randn(WORD, HIDDEN)
        state["prompt_module.prefix_embedding.3.bias"] = randn(WORD)
    return state


def official_config(levels: int = 2, shared: bool = False, mlp: bool = True):
    config = {"start_layer_idx": 1, "end_layer_idx": 4, "injected_hidden_states": levels, "prompt_tuning": True,
              "prompt_len": PROMPT, "text_step": 1, "use_vis_prefix": True, "lm_loss_weight": 0.1,
              "optimizer": {"opt": "adamW", "lr": 2e-5}}
    if shared:
        config["shared_connector"] = True
    if not mlp:
        config["mlp"] = False
    return config


def save_official(path: Path, state, config) -> Path:
    """The file the official training scripts write (optimizer state included)."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(t.clone()) for t in state.values()])
    torch.save({"model": state, "optimizer": optimizer.state_dict(), "lr_scheduler": {"base_values": [2e-5]},
                "config": config, "epoch": 3, "best_valid": 0.5, "best_epoch": 2}, path)
    return path


def test_every_tensor_lands_where_it_should(bases, tmp_path):
    state, config = official_state(), official_config()
    path = save_official(tmp_path / "checkpoint_best.pth", state, config)
    converted = convert_epalm_checkpoint(path, tmp_path / "converted", *bases)
    adapter_config = converted.adapter_config
    assert adapter_config.feature_layers == [-2, -1] and adapter_config.feature_select == "cls"
    assert adapter_config.feature_norm and adapter_config.injection_layer == 1
    assert adapter_config.layers_per_level == 1  # the official step: (end 4 - start 1) // 2 levels
    assert (adapter_config.num_prompt_tokens, adapter_config.prompt_mlp) == (PROMPT, True)
    assert adapter_config.prompt_mlp_hidden_size == HIDDEN and adapter_config.prompt_placement == "input"
    assert not adapter_config.shared_projection

    model = hf_vadapter.VisionAdapterForCausalLM.from_adapter_pretrained(tmp_path / "converted")
    adapter = model.adapter
    for j in range(2):
        assert torch.equal(adapter.projections[j].weight, state[f"connector.{j}.weight"])
        assert torch.equal(adapter.projections[j].bias, state[f"connector.{j}.bias"])
    prompt = adapter.prompt
    assert torch.equal(prompt.embedding.weight, state["prompt_module.prefix_embedding.0.weight"])
    assert torch.equal(prompt.mlp[0].weight, state["prompt_module.prefix_embedding.1.weight"])
    assert torch.equal(prompt.mlp[0].bias, state["prompt_module.prefix_embedding.1.bias"])
    assert torch.equal(prompt.mlp[2].weight, state["prompt_module.prefix_embedding.3.weight"])
    assert torch.equal(prompt.mlp[2].bias, state["prompt_module.prefix_embedding.3.bias"])
    assert len(model.adapter_state_dict()) == len(state)  # nothing else in the adapter

    # The prompt the original computes: Linear -> Tanh -> Linear over the embedding rows, in word_embed_proj_dim.
    hidden = torch.tanh(state["prompt_module.prefix_embedding.0.weight"] @ state["prompt_module.prefix_embedding.1.weight"].T
                        + state["prompt_module.prefix_embedding.1.bias"])
    expected = hidden @ state["prompt_module.prefix_embedding.3.weight"].T + state["prompt_module.prefix_embedding.3.bias"]
    with torch.no_grad():
        torch.testing.assert_close(prompt(), expected)

    # The converted checkpoint runs, and the provenance reaches the model card's source file.
    processor = hf_vadapter.VisionAdapterProcessor.for_model(model)
    with torch.no_grad():
        logits = model(**processor(images=[random_image(0)], text=["what color is the circle?"])).logits
    assert torch.isfinite(logits).all()
    info = json.loads((tmp_path / "converted" / "training_info.json").read_text())
    assert "checkpoint_best.pth" in info["description"] and info["conversion"]["notes"]


def test_shared_connector_and_plain_prompt(bases, tmp_path):
    state, config = official_state(levels=2, shared=True, mlp=False), official_config(levels=2, shared=True, mlp=False)
    path = save_official(tmp_path / "shared.pth", state, config)
    converted = convert_epalm_checkpoint(path, tmp_path / "converted", *bases)
    assert converted.adapter_config.shared_projection and converted.adapter_config.feature_layers == [-2, -1]
    assert not converted.adapter_config.prompt_mlp
    model = hf_vadapter.VisionAdapterForCausalLM.from_adapter_pretrained(tmp_path / "converted")
    assert torch.equal(model.adapter.projection.weight, state["connector.0.weight"])
    assert torch.equal(model.adapter.prompt.embedding.weight, state["prompt_module.prefix_embedding.0.weight"])
    assert model.adapter.prompt.mlp is None


def test_released_config_maps_to_the_paper_schedule():
    """The released OPT-2.7B config: start 19, end 31, 6 levels -> each level feeds 2 layers from layer 19."""
    config = {"start_layer_idx": 19, "end_layer_idx": 31, "injected_hidden_states": 6, "prompt_len": 10}
    state = {f"connector.{j}.{p}": torch.zeros(LM, VISION) if p == "weight" else torch.zeros(LM)
             for j in range(6) for p in ("weight", "bias")}
    state["prompt_module.prefix_embedding.0.weight"] = torch.zeros(10, WORD)
    converted = convert_epalm_state_dict(state, config)
    assert (converted.adapter_config.injection_layer, converted.adapter_config.layers_per_level) == (19, 2)
    assert converted.adapter_config.feature_layers == [-6, -5, -4, -3, -2, -1]
    assert any("end_layer_idx=31" in note for note in converted.notes)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s, c: s.update({"model_text.model.decoder.layers.0.fc2.1.adapter_down.weight": torch.zeros(2)}),
         "does not know"),
        (lambda s, c: s.update({"prompt_module.prefix_embedding.5.weight": torch.zeros(2)}), "does not know"),
        (lambda s, c: c.update({"deep": True}), "deep prompts"),
        (lambda s, c: c.update({"text_step": 2}), "text_step=2"),
        (lambda s, c: c.update({"injected_hidden_states": 3}), "injected_hidden_states=3"),
        (lambda s, c: c.pop("start_layer_idx"), "start_layer_idx"),
        (lambda s, c: s.pop("connector.1.bias"), "connector.1 lacks its bias"),
        (lambda s, c: s.update({"connector.1.weight": torch.zeros(LM, VISION + 1)}), "connector.1.weight has shape"),
        (lambda s, c: s.pop("prompt_module.prefix_embedding.3.bias"), "prompt MLP is incomplete"),
        (lambda s, c: s.update({"prompt_module.prefix_embedding.1.bias": torch.zeros(HIDDEN + 1)}), "has shape"),
    ],
)
def test_refuses_what_it_cannot_map(change, message):
    state, config = official_state(), official_config()
    change(state, config)
    with pytest.raises(hf_vadapter.VisionAdapterError, match=message):
        convert_epalm_state_dict(state, config)


def test_refuses_bases_of_other_widths_naming_both_sides(bases, tmp_path):
    state = official_state()
    state = {k: (torch.zeros(LM, VISION + 8) if k.endswith("weight") and k.startswith("connector") else v)
             for k, v in state.items()}
    path = save_official(tmp_path / "wide.pth", state, official_config())
    with pytest.raises(hf_vadapter.BackboneMismatchError, match=r"adapter.projections.0.weight: \(32, 40\) vs \(32, 32\)"):
        convert_epalm_checkpoint(path, tmp_path / "out", *bases)
    assert not (tmp_path / "out").exists()


def test_refuses_pickled_objects_and_accepts_safetensors(tmp_path):
    from safetensors.torch import save_file

    from hf_vadapter.conversion.original_checkpoint import load_original_checkpoint

    torch.save({"model": official_state(), "args": argparse.Namespace(lr=1.0)}, tmp_path / "pickled.pth")
    with pytest.raises(hf_vadapter.CheckpointError, match="weights_only=True"):
        load_original_checkpoint(tmp_path / "pickled.pth")
    save_file(official_state(), str(tmp_path / "weights.safetensors"))
    state, config = load_original_checkpoint(tmp_path / "weights.safetensors")
    assert set(state) == set(official_state()) and config == {}
    torch.save({f"module.{k}": v for k, v in official_state().items()}, tmp_path / "ddp.pth")
    assert set(load_original_checkpoint(tmp_path / "ddp.pth")[0]) == set(official_state())


def test_cli_hooks_convert(bases, tmp_path, capsys):
    path = save_official(tmp_path / "checkpoint.pth", official_state(), official_config())
    parser = add_convert_original_arguments(argparse.ArgumentParser(prog="hf-vadapter convert-original"))
    args = parser.parse_args(["epalm", str(path), str(tmp_path / "out"), "--vision-model", bases[0],
                              "--text-model", bases[1]])
    assert run_convert_original(args) == 0
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    assert "tensors converted" in capsys.readouterr().out
