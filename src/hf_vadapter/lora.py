"""LoRA on the frozen LM of a `VisionAdapterForCausalLM`, the way PEFT users write it.

`get_peft_model(model, LoraConfig(target_modules=["q_proj", "v_proj"]))` alone would also wrap the vision tower's
projections (which never get a gradient: the tower runs under no_grad) and freeze the vision adapter.
`lora_for_language_model` builds the config that avoids both: LoRA on the LM's modules only, and the adapter kept
trainable through `modules_to_save=["adapter"]` (PEFT trains and saves a copy; the in-layer adapters' hooks follow
the copy).
"""

import re
from typing import TYPE_CHECKING, Optional, Sequence

from .modeling.errors import UnsupportedArchitectureError

if TYPE_CHECKING:
    from peft import LoraConfig


def lora_for_language_model(
    model,
    target_modules: Optional[Sequence[str]] = None,
    r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.05,
    train_adapter: bool = True,
    **lora_kwargs,
) -> "LoraConfig":
    """A `LoraConfig` for `get_peft_model(model, ...)` that wraps only the language model.

    Args:
        model: the `VisionAdapterForCausalLM` to wrap.
        target_modules: module names inside the LM (say `["q_proj", "v_proj"]`); default: PEFT's own defaults for
            the LM's `model_type`.
        train_adapter: keep the vision adapter trainable (`modules_to_save=["adapter"]`); False trains LoRA only.
        r, lora_alpha, lora_dropout, **lora_kwargs: as `LoraConfig`. The dropout is active under `model.train()`.
    """
    try:  # peft is the [train] extra: loading an adapter does not need it
        from peft import LoraConfig
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    except ImportError as error:
        raise ImportError("lora_for_language_model needs peft: pip install 'hf-vadapter[train]'.") from error
    model_type = model.config.text_config.model_type
    if target_modules is None:
        target_modules = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
        if target_modules is None:
            raise UnsupportedArchitectureError(
                f"PEFT has no default LoRA targets for the LM type {model_type!r}; pass target_modules=[...] with "
                "the names of its attention projections."
            )
    names = "|".join(re.escape(name) for name in target_modules)
    return LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=rf"language_model\..*\.({names})",  # a regex matches full module names: the LM's only
        modules_to_save=["adapter"] if train_adapter else None,
        fan_in_fan_out=model_type == "gpt2",  # GPT-2's Conv1D stores its weight as [in, out]
        **lora_kwargs,
    )
