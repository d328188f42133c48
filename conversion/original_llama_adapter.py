"""Official LLaMA-Adapter V2 multimodal checkpoints (github.com/OpenGVLab/LLaMA-Adapter) -> hf_vadapter.

The official layout, read from OpenGVLab/LLaMA-Adapter `llama_adapter_v2_multimodal7b/`: `llama/llama_adapter.py`
(the model and the `BIAS-7B` / `LORA-BIAS-7B` / `CAPTION-7B` release URLs), `llama/llama.py` (Meta's LLaMA with
`w_bias` / `w_lora` / `w_new_gate`) and `util/extract_adapter_from_checkpoint.py` (what a release holds). A release
is `{"model": {...}, "config": {"w_bias": True, "w_lora": False, "lora_rank": 16}}` with, for LLaMA-7B (n = 32
layers, D = 4096, H = 32 heads, F = 11008), query_len P = 10 and query_layer K = 31:

| official key | shape | hf_vadapter key |
|---|---|---|
| `adapter_query.weight` | `[K*P, D]` | `adapter.prompts` `[K, P, D]` (row block k -> layer n-K+k) |
| `llama.layers.{i}.attention.gate` | `[1, H, 1, 1]` | `adapter.prompt_gates[i-(n-K)]` `[H]` for i >= n-K; i < n-K is never read by the original |
| `llama.layers.{i}.attention.wq.bias` | `[D]` | `adapter.linear_bias.model-layers-{i}-self_attn-q_proj`, rows permuted to HF's rotary layout |
| `llama.layers.{i}.attention.wo.bias` | `[D]` | `adapter.linear_bias.model-layers-{i}-self_attn-o_proj` |
| `llama.layers.{i}.feed_forward.w1.bias` / `w3.bias` / `w2.bias` | `[F]` / `[F]` / `[D]` | `...-mlp-gate_proj` / `...-mlp-up_proj` / `...-mlp-down_proj` |
| `llama.layers.{i}.attention_norm.weight` | `[D]` | `language_model.model.layers.{i}.input_layernorm.weight` |
| `llama.layers.{i}.ffn_norm.weight` | `[D]` | `language_model.model.layers.{i}.post_attention_layernorm.weight` |
| `llama.norm.weight` | `[D]` | `language_model.model.norm.weight` |
| `clip_proj.*`, `clip_proj_norm.*`, `visual_query.weight`, `visual_blocks.{b}.*`, `visual_proj.*`, `visual_proj_norm.*` | | none: see below |
| `*.lora_*`, `*.new_gate` (`LORA-BIAS-7B`) | | none: refused |

Targets without a source keep the fresh adapter's identity values: the k/v projection biases (0; the original has
none) and every `linear_scale` (1; the original has no scale tuning). The q bias needs a permutation because Meta's
checkpoints rotate interleaved pairs `(2i, 2i+1)` of each head while HF's Llama rotates halves `(i, i+hd/2)`; HF's
converted `q_proj` rows are permuted accordingly, so the bias that is added to them before the rotation must be too.

**The visual path does not convert.** hf_vadapter builds LLaMA-Adapter V2 as the paper describes (the project's
spec): a projected global image feature plus learnable queries, fused into the early layers only. The released code
differs: all CLIP ViT-L/14 tokens go through `clip_proj` + LayerNorm, are concatenated behind 10 learnable queries,
pass 8 ViT blocks, and the first 10 outputs, after `visual_proj` + LayerNorm, are *added to the adaption prompts of
every late layer*. Neither the 8 blocks nor prompt-side fusion exist in hf_vadapter, so those tensors have no
target. The converter refuses them unless `drop_visual_path=True`, which converts the language side (prompts,
gates, biases, norms) into a text-only adapter (`use_early_fusion=False`) and lists every dropped tensor. Note that
the original never ran its prompts without the visual query added, so this is a partial conversion.
"""

import re
from typing import Dict, Optional

import torch

from hf_vadapter.modeling.errors import CheckpointError

from .original_checkpoint import (
    ConvertedAdapter,
    check_shape,
    file_digest,
    load_original_checkpoint,
    refuse_unknown,
    write_converted_adapter,
)

_LAYER = re.compile(r"llama\.layers\.(\d+)\.(.+)")
# per-layer official suffix -> HF Llama module name (relative to the layer) of the linear whose output gets the bias
BIAS_TARGETS = {
    "attention.wq.bias": "self_attn.q_proj",
    "attention.wo.bias": "self_attn.o_proj",
    "feed_forward.w1.bias": "mlp.gate_proj",
    "feed_forward.w3.bias": "mlp.up_proj",
    "feed_forward.w2.bias": "mlp.down_proj",
}
NORM_TARGETS = {
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
VISUAL_PREFIXES = ("clip_proj.", "clip_proj_norm.", "visual_query.", "visual_blocks.", "visual_proj.",
                   "visual_proj_norm.")
# Target tensors that keep the fresh adapter's identity values (see the module docstring).
DEFAULTS = ("adapter.linear_bias.*-self_attn-k_proj", "adapter.linear_bias.*-self_attn-v_proj",
            "adapter.linear_scale.*")


def _bias_key(layer: int, module: str) -> str:
    """The hf_vadapter key of a linear's bias: `linear_bias` is a ParameterDict keyed by the module's full name
    with dots as dashes (`llama_adapter_v2.sanitize_module_name`), the LM's decoder layers being `model.layers`."""
    return "adapter.linear_bias." + f"model.layers.{layer}.{module}".replace(".", "-")


def meta_to_hf_rotary_rows(tensor: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Reorder the output rows (dim 0) of a q/k projection from Meta's interleaved rotary layout to HF's halves.

    Within each head, Meta's row `2*i + k` (pair i, member k) becomes HF's row `k * head_dim/2 + i`.
    """
    rows = tensor.shape[0]
    half = rows // num_heads // 2
    return tensor.reshape(num_heads, half, 2, *tensor.shape[1:]).transpose(1, 2).reshape(tensor.shape)


def convert_llama_adapter_v2_state_dict(
    state: Dict[str, torch.Tensor],
    config: Optional[Dict] = None,
    *,
    prompt_length: int = 10,
    drop_visual_path: bool = False,
    source: str = "",
) -> ConvertedAdapter:
    """Map an official LLaMA-Adapter V2 multimodal state dict onto `LlamaAdapterV2Config` (language side).

    `prompt_length` is the original `query_len` (10 in every release; the checkpoint does not store it).
    """
    from hf_vadapter.modeling.llama_adapter_v2 import LlamaAdapterV2Config

    config = dict(config or {})
    if config.get("w_lora"):
        raise CheckpointError(
            "This is a LoRA checkpoint (config w_lora=True, e.g. LORA-BIAS-7B): hf_vadapter's LLaMA-Adapter V2 has no "
            "LoRA branches. Convert BIAS-7B, or add LoRA to the LM with PEFT separately."
        )
    layers: Dict[int, Dict[str, torch.Tensor]] = {}
    visual, unknown = [], []
    query = final_norm = None
    for key, tensor in state.items():
        match = _LAYER.fullmatch(key)
        if match:
            suffix = match.group(2)
            if "lora" in suffix or suffix == "attention.new_gate":
                raise CheckpointError(f"{key} belongs to the LoRA variant, which hf_vadapter does not convert.")
            if suffix in BIAS_TARGETS or suffix in NORM_TARGETS or suffix == "attention.gate":
                layers.setdefault(int(match.group(1)), {})[suffix] = tensor
            else:
                unknown.append(key)
        elif key == "adapter_query.weight":
            query = tensor
        elif key == "llama.norm.weight":
            final_norm = tensor
        elif key.startswith(VISUAL_PREFIXES):
            visual.append(key)
        else:
            unknown.append(key)
    refuse_unknown(unknown, "LLaMA-Adapter V2", "Only the multimodal release layout (BIAS-7B) is known.")
    if visual and not drop_visual_path:
        raise CheckpointError(
            f"The checkpoint's visual path ({len(visual)} tensors: clip_proj, visual_query, {len({k.split('.')[1] for k in visual if k.startswith('visual_blocks.')})} "
            "visual_blocks, visual_proj) has no counterpart in hf_vadapter's LLaMA-Adapter V2, which follows the "
            "paper (early fusion of a projected global feature) rather than the released code (8 ViT blocks whose "
            "output is added to every late prompt). Pass drop_visual_path=True (--drop-visual-path) to convert the "
            "language side only, as a text-only adapter."
        )
    if query is None:
        raise CheckpointError("No adapter_query.weight: this is not a LLaMA-Adapter V2 checkpoint.")
    if not layers:
        raise CheckpointError("No llama.layers.* tensors (gates): this is not a LLaMA-Adapter V2 checkpoint.")
    num_layers = max(layers) + 1
    if sorted(layers) != list(range(num_layers)):
        raise CheckpointError(f"The checkpoint has tensors for layers {sorted(layers)}, not 0..{num_layers - 1}.")
    rows, width = query.shape
    if rows % prompt_length:
        raise CheckpointError(
            f"adapter_query.weight has {rows} rows, not a multiple of prompt_length={prompt_length} (query_len)."
        )
    num_prompt_layers = rows // prompt_length
    if num_prompt_layers > num_layers:
        raise CheckpointError(f"{num_prompt_layers} prompt layers for a {num_layers}-layer LLaMA.")
    first_prompt_layer = num_layers - num_prompt_layers
    gate_shape = next((t.shape for parts in layers.values() for k, t in parts.items() if k == "attention.gate"), None)
    if gate_shape is None or len(gate_shape) != 4:
        raise CheckpointError("The checkpoint has no per-head attention gates ([1, H, 1, 1]).")
    num_heads = gate_shape[1]
    if width % (2 * num_heads):
        raise CheckpointError(f"Width {width} does not split into {num_heads} heads of even size.")

    has_bias = any(k in BIAS_TARGETS for parts in layers.values() for k in parts)
    has_norms = final_norm is not None or any(k in NORM_TARGETS for parts in layers.values() for k in parts)
    wanted = {"attention.gate", *(BIAS_TARGETS if has_bias else ()), *(NORM_TARGETS if has_norms else ())}
    tensors: Dict[str, torch.Tensor] = {
        "adapter.prompts": query.reshape(num_prompt_layers, prompt_length, width),
    }
    gates = []
    ignored: Dict[str, str] = {}
    ffn_width = None
    for index in range(num_layers):
        parts = layers[index]
        missing = sorted(wanted - set(parts))
        if missing:
            raise CheckpointError(f"Layer {index} lacks {missing}; the other layers have them.")
        gate = check_shape(f"llama.layers.{index}.attention.gate", parts["attention.gate"], (1, num_heads, 1, 1),
                           "a per-head gate")
        if index >= first_prompt_layer:
            gates.append(gate.reshape(num_heads))
        else:
            ignored[f"llama.layers.{index}.attention.gate"] = (
                f"layer {index} gets no adaption prompt (query_layer={num_prompt_layers}), so the original never "
                "reads its gate"
            )
        if has_bias:
            ffn_width = ffn_width or parts["feed_forward.w1.bias"].shape[0]
            sizes = {"attention.wq.bias": width, "attention.wo.bias": width, "feed_forward.w1.bias": ffn_width,
                     "feed_forward.w3.bias": ffn_width, "feed_forward.w2.bias": width}
            for suffix, module in BIAS_TARGETS.items():
                bias = check_shape(f"llama.layers.{index}.{suffix}", parts[suffix], (sizes[suffix],), "that layer")
                if suffix == "attention.wq.bias":
                    bias = meta_to_hf_rotary_rows(bias, num_heads)
                tensors[_bias_key(index, module)] = bias
        if has_norms:
            for suffix, target in NORM_TARGETS.items():
                norm = check_shape(f"llama.layers.{index}.{suffix}", parts[suffix], (width,), "the model width")
                tensors[f"language_model.model.layers.{index}.{target}"] = norm
    tensors["adapter.prompt_gates"] = torch.stack(gates)  # [K, H]
    if has_norms:
        if final_norm is None:
            raise CheckpointError("The checkpoint has layer norms but no llama.norm.weight.")
        tensors["language_model.model.norm.weight"] = check_shape("llama.norm.weight", final_norm, (width,), "the width")
    for key in visual:
        ignored[key] = "visual path with no hf_vadapter counterpart, dropped on request (drop_visual_path=True)"

    adapter_config = LlamaAdapterV2Config(
        use_prompts=True,
        num_prompt_tokens=prompt_length,
        num_prompt_layers=num_prompt_layers,
        use_early_fusion=False,
        use_bias_scale=has_bias,
        train_norms=has_norms,
    )
    notes = [
        "Text-only: the original adds its visual query to every late prompt; without the visual path the prompts "
        "run alone, which the original never did.",
        "k/v projection biases stay 0 and every scale stays 1 (the original tunes neither).",
    ]
    return ConvertedAdapter(adapter_config, tensors, defaults=DEFAULTS if has_bias else (), ignored=ignored,
                            notes=notes, source=source)


def convert_llama_adapter_v2_checkpoint(
    checkpoint_path,
    output_dir,
    vision_model_name_or_path: str,
    text_model_name_or_path: str,
    *,
    vision_revision: Optional[str] = None,
    text_revision: Optional[str] = None,
    prompt_length: int = 10,
    drop_visual_path: bool = False,
    dtype: Optional[torch.dtype] = None,
) -> ConvertedAdapter:
    """Convert an official LLaMA-Adapter V2 `.pth` (e.g. `BIAS-7B.pth`) into an hf_vadapter checkpoint folder.

    The LM must be the LLaMA-7B the original was trained on, in HF format (e.g. `huggyllama/llama-7b`); the tower is
    recorded but unused by a text-only conversion (the original used CLIP ViT-L/14: `openai/clip-vit-large-patch14`).
    """
    state, config = load_original_checkpoint(checkpoint_path)
    converted = convert_llama_adapter_v2_state_dict(
        state,
        config,
        prompt_length=prompt_length,
        drop_visual_path=drop_visual_path,
        source=f"LLaMA-Adapter V2 {checkpoint_path} (sha256 {file_digest(checkpoint_path)[:16]})",
    )
    write_converted_adapter(
        converted,
        output_dir,
        vision_model_name_or_path,
        text_model_name_or_path,
        vision_revision=vision_revision,
        text_revision=text_revision,
        dtype=dtype,
    )
    return converted
