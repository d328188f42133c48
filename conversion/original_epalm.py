"""Official eP-ALM checkpoints (github.com/mshukor/eP-ALM) -> hf_vadapter `epalm` adapter checkpoints.

The official layout, read from mshukor/eP-ALM (`models/epalm.py`, `models/connector.py`, `models/utils.py`,
`float32/*.py`, `accelerate_training/*.py`): training saves `{"model": filter_state(state_dict, exclude_list),
"optimizer", "lr_scheduler", "config", "epoch", "best_valid", "best_epoch"}`, where `filter_state` keeps every key
that does not contain `model_text`, `transformer` or `model_vision`, i.e. exactly the connectors and the prompt.
The released checkpoints are these files ("we provide only the adaptation parameters", README):

| official key | shape | hf_vadapter key |
|---|---|---|
| `connector.{j}.weight`, `.bias` | `[D_lm, D_vis]`, `[D_lm]` | `adapter.projections.{j}.weight`, `.bias` (`adapter.projection.*` with a shared connector) |
| `prompt_module.prefix_embedding.0.weight` | `[P, D_word]` | `adapter.prompt.embedding.weight` |
| `prompt_module.prefix_embedding.1.weight`, `.bias` | `[H, D_word]`, `[H]` | `adapter.prompt.mlp.0.weight`, `.bias` |
| `prompt_module.prefix_embedding.3.weight`, `.bias` | `[D_word, H]`, `[D_word]` | `adapter.prompt.mlp.2.weight`, `.bias` |

(`prefix_embedding.2` is the Tanh; the `.1`/`.3` linears exist with `mlp: True`, the default; `D_word` is OPT's
`word_embed_proj_dim`, which the official prompt lives in because it is concatenated before `project_in`.)

The config entries map as: `injected_hidden_states` N -> `feature_layers = [-N, ..., -1]` ([CLS], after the tower's
final norm: the official ViT returns `norm(x)` after every block), connector j reading the j-th of those layers,
shallow to deep; `shared_connector` -> `shared_projection`; `start_layer_idx` -> `injection_layer`; the official
step `(end_layer_idx - start_layer_idx) // N` (1 when N == 1 or the span is not longer than N) ->
`layers_per_level`; `prompt_len` -> `num_prompt_tokens`; `mlp` -> `prompt_mlp` with `prompt_mlp_hidden_size = H`;
`prompt_placement="input"` (the official prompt is prepended at the input). Refused, with an error: deep prompts
(`deep`), `text_step != 1`, `select_higher_step`, bottleneck adapters in the LM (`use_adapters`, their keys contain
`adapter`), and any key not in the table.

The converted adapter runs eP-ALM as hf_vadapter defines it, which differs from the official code on purpose (see
`docs/epalm.md`), so outputs are not bit-identical to the original: the [CLS] slot obeys the causal mask, it also
feeds the layers from `end_layer_idx` to the top, it sits after the prompt rather than at the very front, and the
prompt slots get position embeddings like any token.
"""

import re
from typing import Any, Dict, Optional

import torch

from hf_vadapter.modeling.epalm import EPALMConfig
from hf_vadapter.modeling.errors import CheckpointError

from .original_checkpoint import (
    ConvertedAdapter,
    check_shape,
    file_digest,
    load_original_checkpoint,
    refuse_unknown,
    write_converted_adapter,
)

_CONNECTOR = re.compile(r"connector\.(\d+)\.(weight|bias)")
_PROMPT = "prompt_module.prefix_embedding."
# official prompt key suffix -> (hf key, role in the shape checks)
PROMPT_KEYS = {
    "0.weight": "adapter.prompt.embedding.weight",
    "1.weight": "adapter.prompt.mlp.0.weight",
    "1.bias": "adapter.prompt.mlp.0.bias",
    "3.weight": "adapter.prompt.mlp.2.weight",
    "3.bias": "adapter.prompt.mlp.2.bias",
}


def _layers_per_level(start: int, end: Optional[int], num_levels: int) -> int:
    """The official injection step: `(end - start) // N` when the span is longer than N, else 1."""
    if num_levels == 1:
        return 1
    if end is None:
        raise CheckpointError(
            "The checkpoint's config does not give end_layer_idx, which fixes how many LM layers each [CLS] level "
            "feeds. Pass end_layer= (the original end_layer_idx, e.g. 31 for OPT-2.7B/6.7B)."
        )
    span = end - start
    return span // num_levels if span > num_levels else 1


def convert_epalm_state_dict(
    state: Dict[str, torch.Tensor],
    config: Optional[Dict[str, Any]] = None,
    *,
    injection_layer: Optional[int] = None,
    end_layer: Optional[int] = None,
    num_levels: Optional[int] = None,
    source: str = "",
) -> ConvertedAdapter:
    """Map an official eP-ALM state dict (and its training config, when the checkpoint has one) onto `EPALMConfig`.

    Arguments override the config: `injection_layer` (`start_layer_idx`), `end_layer` (`end_layer_idx`),
    `num_levels` (`injected_hidden_states`, needed with a shared connector when the config is absent).
    """
    config = dict(config or {})
    for flag, why in (("deep", "deep prompts (one prompt per LM layer)"), ("use_adapters", "bottleneck adapters "
                      "inside the LM"), ("select_higher_step", "select_higher_step")):
        if config.get(flag):
            raise CheckpointError(f"This eP-ALM checkpoint uses {why}, which hf_vadapter's eP-ALM does not have.")
    if int(config.get("text_step", 1)) != 1:
        raise CheckpointError(f"text_step={config['text_step']} (injection into every k-th layer) is not supported.")
    if config.get("connector_type", "linear") != "linear":
        raise CheckpointError(f"connector_type={config['connector_type']!r}: only the linear connector exists.")

    connectors: Dict[int, Dict[str, torch.Tensor]] = {}
    prompt: Dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state.items():
        match = _CONNECTOR.fullmatch(key)
        if match:
            connectors.setdefault(int(match.group(1)), {})[match.group(2)] = tensor
        elif key.startswith(_PROMPT) and key[len(_PROMPT) :] in PROMPT_KEYS:
            prompt[key[len(_PROMPT) :]] = tensor
        else:
            unknown.append(key)
    refuse_unknown(
        unknown,
        "eP-ALM",
        "Keys with 'adapter' come from use_adapters (bottleneck adapters in the LM), which hf_vadapter's eP-ALM "
        "does not have; prompt keys beyond prefix_embedding.0-3 come from another prompt module.",
    )
    if not connectors:
        raise CheckpointError("No connector.* tensors: this is not an eP-ALM adapter checkpoint.")
    if sorted(connectors) != list(range(len(connectors))):
        raise CheckpointError(f"Connector indices {sorted(connectors)} are not 0..{len(connectors) - 1}.")
    for index, parts in connectors.items():
        if set(parts) != {"weight", "bias"}:
            raise CheckpointError(f"connector.{index} lacks its {({'weight', 'bias'} - set(parts)).pop()}.")

    lm_width, vision_width = connectors[0]["weight"].shape
    shared = len(connectors) == 1 and (bool(config.get("shared_connector")) or (num_levels or 1) > 1)
    configured_levels = num_levels or config.get("injected_hidden_states")
    if shared:
        levels = int(configured_levels or 1)
    else:
        levels = len(connectors)
        if configured_levels is not None and int(configured_levels) != levels:
            raise CheckpointError(
                f"The config says injected_hidden_states={configured_levels}, but the checkpoint holds {levels} "
                "connectors (one per level)."
            )
    tensors: Dict[str, torch.Tensor] = {}
    for index, parts in connectors.items():
        name = "adapter.projection" if shared else f"adapter.projections.{index}"
        tensors[f"{name}.weight"] = check_shape(
            f"connector.{index}.weight", parts["weight"], (lm_width, vision_width), "every connector (as connector.0)"
        )
        tensors[f"{name}.bias"] = check_shape(f"connector.{index}.bias", parts["bias"], (lm_width,), "its weight")

    num_prompt_tokens, prompt_mlp, hidden = 0, False, None
    if prompt:
        if "0.weight" not in prompt:
            raise CheckpointError(f"The prompt has MLP tensors but no {_PROMPT}0.weight (its embedding).")
        num_prompt_tokens, word_width = prompt["0.weight"].shape
        mlp_keys = set(prompt) - {"0.weight"}
        if mlp_keys and mlp_keys != set(PROMPT_KEYS) - {"0.weight"}:
            raise CheckpointError(f"The prompt MLP is incomplete: it has only {sorted(mlp_keys)}.")
        prompt_mlp = bool(mlp_keys)
        expected = {"0.weight": (num_prompt_tokens, word_width)}
        if prompt_mlp:
            hidden = prompt["1.weight"].shape[0]
            expected.update({"1.weight": (hidden, word_width), "1.bias": (hidden,), "3.weight": (word_width, hidden),
                             "3.bias": (word_width,)})
        for suffix, tensor in prompt.items():
            tensors[PROMPT_KEYS[suffix]] = check_shape(_PROMPT + suffix, tensor, expected[suffix], "the prompt")
        if config.get("prompt_len") not in (None, num_prompt_tokens):
            raise CheckpointError(
                f"The config says prompt_len={config['prompt_len']}, but the prompt embedding has {num_prompt_tokens} "
                "rows (deep prompts hold prompt_len * nb_prompts)."
            )

    start = injection_layer if injection_layer is not None else config.get("start_layer_idx")
    if start is None:
        raise CheckpointError(
            "The checkpoint's config does not give start_layer_idx, the first LM layer the [CLS] tokens enter. Pass "
            "injection_layer= (19 in the released OPT-2.7B/6.7B configs)."
        )
    end = end_layer if end_layer is not None else config.get("end_layer_idx")
    adapter_config = EPALMConfig(
        feature_layers=list(range(-levels, 0)),
        feature_select="cls",
        feature_norm=True,
        injection_layer=int(start),
        layers_per_level=_layers_per_level(int(start), None if end is None else int(end), levels),
        shared_projection=shared,
        num_prompt_tokens=int(num_prompt_tokens),
        prompt_mlp=prompt_mlp,
        prompt_mlp_hidden_size=hidden,
        prompt_placement="input",
    )
    notes = [
        "The [CLS] slot obeys the causal mask here; the original leaves its attention row unmasked.",
        "The prompt placeholders get position embeddings here; the original adds none to the prompt.",
    ]
    if end is not None:
        notes.append(
            f"Layers from end_layer_idx={end} to the top also receive the last [CLS] level here; the original "
            "leaves them untouched."
        )
    return ConvertedAdapter(adapter_config, tensors, notes=notes, source=source)


def convert_epalm_checkpoint(
    checkpoint_path,
    output_dir,
    vision_model_name_or_path: str,
    text_model_name_or_path: str,
    *,
    vision_revision: Optional[str] = None,
    text_revision: Optional[str] = None,
    injection_layer: Optional[int] = None,
    end_layer: Optional[int] = None,
    num_levels: Optional[int] = None,
    dtype: Optional[torch.dtype] = None,
) -> ConvertedAdapter:
    """Convert an official eP-ALM `.pth` into an hf_vadapter adapter checkpoint folder on the given bases.

    The bases should be the ones the original was trained with, e.g. `facebook/opt-2.7b` and a ViT-B/16 tower
    (the official code uses timm's `vit_base_patch16_224`; `google/vit-base-patch16-224` has the same shapes but
    not necessarily the same weights).
    """
    state, config = load_original_checkpoint(checkpoint_path)
    converted = convert_epalm_state_dict(
        state,
        config,
        injection_layer=injection_layer,
        end_layer=end_layer,
        num_levels=num_levels,
        source=f"eP-ALM {checkpoint_path} (sha256 {file_digest(checkpoint_path)[:16]})",
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
