"""eP-ALM's trainable parameters on real-size bases, counted from their configs on the meta device (no weights).

    python scripts/count_epalm.py

The configs are the published `config.json` values of the named checkpoints, written out here so that nothing is
downloaded; the model is built on the meta device, so no memory is allocated. The count is the model's own
`get_nb_trainable_parameters()`, the figure `print_trainable_parameters()` shows during training.
"""

import torch
from transformers import LlamaConfig, OPTConfig, ViTConfig

from hf_vadapter import EPALMConfig, VisionAdapterConfig, VisionAdapterForCausalLM


def vit(hidden: int, layers: int, heads: int) -> ViTConfig:  # google/vit-{base,large}-patch16-224(-in21k)
    return ViTConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        image_size=224,
        patch_size=16,
    )


def opt(hidden: int, ffn: int) -> OPTConfig:  # facebook/opt-2.7b, facebook/opt-6.7b: 32 layers
    return OPTConfig(
        hidden_size=hidden,
        ffn_dim=ffn,
        num_hidden_layers=32,
        num_attention_heads=32,
        vocab_size=50272,
        max_position_embeddings=2048,
        word_embed_proj_dim=hidden,
    )


LLAMA_2_7B = LlamaConfig(  # meta-llama/Llama-2-7b-hf
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    vocab_size=32000,
    max_position_embeddings=4096,
)
VIT_B16, VIT_L16 = vit(768, 12, 12), vit(1024, 24, 16)
OPT_2_7B, OPT_6_7B = opt(2560, 10240), opt(4096, 16384)
LARGE = dict(shared_projection=True, prompt_mlp=False)  # the paper's large variant

PAIRS = [
    ("ViT-B/16 + OPT-2.7B", VIT_B16, OPT_2_7B, "default", {}),
    ("ViT-L/16 + OPT-6.7B", VIT_L16, OPT_6_7B, "default", {}),
    ("ViT-L/16 + OPT-6.7B", VIT_L16, OPT_6_7B, "large variant", LARGE),
    ("ViT-L/16 + Llama-2-7B", VIT_L16, LLAMA_2_7B, "default", {}),
    ("ViT-L/16 + Llama-2-7B", VIT_L16, LLAMA_2_7B, "large variant", LARGE),
]


def count(vision_config, text_config, adapter_config: EPALMConfig):
    config = VisionAdapterConfig(
        vision_config, text_config, adapter_config, image_size=224, image_token_id=text_config.vocab_size
    )
    with torch.device("meta"):
        model = VisionAdapterForCausalLM(config)
    trainable, total = model.get_nb_trainable_parameters()
    return trainable, total, model.adapter.injection_layer


def main() -> None:
    print(f"{'bases':24} {'eP-ALM config':14} {'L':>3} {'trainable':>12} {'total':>15} {'trainable %':>11}")
    for name, vision_config, text_config, label, overrides in PAIRS:
        trainable, total, injection_layer = count(vision_config, text_config, EPALMConfig(**overrides))
        print(f"{name:24} {label:14} {injection_layer:>3} {trainable:>12,} {total:>15,} {100 * trainable / total:>10.3f}%")


if __name__ == "__main__":
    main()
