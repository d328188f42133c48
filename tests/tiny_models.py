"""Tiny random towers, LMs and a tokenizer built from configs, saved to folders: no Hub access anywhere."""

from pathlib import Path
from typing import Dict

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PreTrainedTokenizerFast, ViTImageProcessorPil

IMAGE_SIZE = 32
PATCH_SIZE = 8
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
_CORPUS = [
    "a red circle on the left and a blue square on the right.",
    "what color is the circle? red. how many shapes are there? two.",
    "describe the image. a small green triangle at the top. yes no left right top bottom center",
    "is there a yellow star? no. where is the purple square? bottom.",
]

TOWERS: Dict[str, dict] = {
    "vit": dict(model_type="vit", image_size=IMAGE_SIZE, patch_size=PATCH_SIZE),
    "clip": dict(model_type="clip_vision_model", image_size=IMAGE_SIZE, patch_size=PATCH_SIZE),
    "siglip": dict(model_type="siglip_vision_model", image_size=IMAGE_SIZE, patch_size=PATCH_SIZE),
    "dinov2": dict(model_type="dinov2", image_size=IMAGE_SIZE, patch_size=PATCH_SIZE),
}
TOWER_SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)

LMS: Dict[str, dict] = {
    "gpt2": dict(model_type="gpt2", n_embd=32, n_layer=2, n_head=4, n_positions=256),
    "llama": dict(model_type="llama", num_key_value_heads=2),
    "qwen2": dict(model_type="qwen2", num_key_value_heads=2),
    "opt": dict(model_type="opt", ffn_dim=64, word_embed_proj_dim=32),
    "mistral": dict(model_type="mistral", num_key_value_heads=2),
    "gemma": dict(model_type="gemma", num_key_value_heads=2, head_dim=8),
    "phi3": dict(model_type="phi3", num_key_value_heads=2, pad_token_id=0),
}
_LM_SIZES = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=256
)


def build_tokenizer(chat_template: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of about 300 tokens trained on a few sentences."""
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    from tokenizers import decoders

    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tower(kind: str, folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    spec = dict(TOWERS[kind])
    config = AutoConfig.for_model(spec.pop("model_type"), **TOWER_SIZES, **spec)
    AutoModel.from_config(config).save_pretrained(folder)
    ViTImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(folder)
    return folder


def save_lm(kind: str, folder: Path, seed: int = 0, initializer_range: float = 0.3, chat_template: bool = False) -> Path:
    """A tiny LM whose vocabulary is exactly the tokenizer's, so `<image>` gets an id outside it.

    The large `initializer_range` gives peaked logits that a visual prefix can steer; at 0.02 a frozen random LM
    is near-uniform and no adapter can lower the loss.
    """
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(chat_template)
    spec = dict(LMS[kind])
    sizes = {} if kind == "gpt2" else dict(_LM_SIZES)
    config = AutoConfig.for_model(
        spec.pop("model_type"),
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        initializer_range=initializer_range,
        **sizes,
        **spec,
    )
    if kind != "phi3":
        config.pad_token_id = tokenizer.pad_token_id
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
