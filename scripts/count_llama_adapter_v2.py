"""Trainable parameters of LLaMA-Adapter V2 on a real-size pair, computed from configs on the meta device.

No weights are downloaded or allocated: the configs below are the published `config.json` shapes of
`openai/clip-vit-large-patch14` (vision half) and `meta-llama/Llama-2-7b-hf`, and the model is built on `meta`.

    python scripts/count_llama_adapter_v2.py [--num-prompt-layers K] [--feature-layers -1 ...]
"""

import argparse
from collections import Counter

import torch
from transformers import CLIPVisionConfig, LlamaConfig

import hf_vadapter

CLIP_VIT_L_14 = dict(  # openai/clip-vit-large-patch14, vision_config
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224, patch_size=14
)
LLAMA_2_7B = dict(  # meta-llama/Llama-2-7b-hf
    hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
    vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5,
)


def count(adapter_config: hf_vadapter.LlamaAdapterV2Config) -> dict:
    config = hf_vadapter.VisionAdapterConfig(
        vision_config=CLIPVisionConfig(**CLIP_VIT_L_14),
        text_config=LlamaConfig(**LLAMA_2_7B),
        adapter_config=adapter_config,
        image_size=224,
        image_token_id=LLAMA_2_7B["vocab_size"],
    )
    with torch.device("meta"):
        model = hf_vadapter.VisionAdapterForCausalLM(config)
    parts = Counter()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("language_model."):
            part = "norms (unfrozen LM)"
        else:
            part = {"linear_bias": "biases", "linear_scale": "scales"}.get(name.split(".")[1], name.split(".")[1])
        parts[part] += param.numel()
    groups = {
        group: sum(model.get_parameter(name).numel() for name in names)
        for group, names in model.adapter.parameter_groups().items()
    }
    trainable, total = model.get_nb_trainable_parameters()
    lm_total = sum(p.numel() for p in model.language_model.parameters())
    return dict(parts=parts, groups=groups, trainable=trainable, total=total, lm_total=lm_total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-prompt-layers", type=int, default=None)
    parser.add_argument("--feature-layers", type=int, nargs="+", default=[-1])
    args = parser.parse_args()
    adapter_config = hf_vadapter.LlamaAdapterV2Config(
        num_prompt_layers=args.num_prompt_layers, feature_layers=args.feature_layers
    )
    result = count(adapter_config)
    early, late = adapter_config.layer_plan(LLAMA_2_7B["num_hidden_layers"])
    print(
        f"CLIP ViT-L/14 + Llama-2-7B: prompts in {len(late)} layers x {adapter_config.num_prompt_tokens} tokens, "
        f"{adapter_config.num_visual_tokens} visual tokens in {len(early)} early layer(s), "
        f"feature_layers={adapter_config.feature_layers}"
    )
    for part, n in sorted(result["parts"].items(), key=lambda item: -item[1]):
        print(f"  {part:<22} {n:>12,d}")
    for group, n in result["groups"].items():
        print(f"  group {group:<16} {n:>12,d}")
    bias_scale_norms = result["parts"]["biases"] + result["parts"]["scales"] + result["parts"]["norms (unfrozen LM)"]
    lm_total = result["lm_total"]
    print(f"  trainable              {result['trainable']:>12,d}  ({100 * result['trainable'] / lm_total:.3f}% of the LM)")
    print(f"  bias+scale+norms       {bias_scale_norms:>12,d}  ({100 * bias_scale_norms / lm_total:.3f}% of the LM)")
    print(f"  all parameters         {result['total']:>12,d}")


if __name__ == "__main__":
    main()
