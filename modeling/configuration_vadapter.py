"""`VisionAdapterConfig`: a frozen vision tower, a frozen causal LM, and the adapter between them."""

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Union

from transformers import AutoConfig, PretrainedConfig

from .adapter_config import AdapterConfig
from .adapters import adapter_config_from_dict, adapter_config_to_dict, family_code_file, loading_code_from
from .errors import AdapterConfigError, CheckpointError

# What a saved config.json must hold: without them the model cannot be rebuilt (no default is silently assumed).
REQUIRED_ENTRIES = ("vision_config", "text_config", "adapter_config")

IGNORE_INDEX = -100  # the label of a position that is not supervised (prompt, image placeholders, padding)


class VisionAdapterConfig(PretrainedConfig):
    """Configuration of a `VisionAdapterForCausalLM`.

    Args:
        vision_config: config of the frozen vision tower (a dict or a `PretrainedConfig`; ViT, CLIP/SigLIP vision,
            DINOv2, ...).
        text_config: config of the frozen causal LM.
        adapter_config: the adapter's config dataclass (`MLPProjectorConfig`, `PerceiverResamplerConfig`,
            `PaLM2VAdapterConfig`, `EPALMConfig`, `LlamaAdapterV2Config`) or its dict. It also says which tower
            layers and tokens the adapter reads (`feature_layers`, `feature_select`).
        image_size: the side of the square images fed to the tower (taken from the image processor).
        image_token: the placeholder string the processor expands.
        image_token_id: the placeholder's id. It is the processor's own and may lie outside the LM vocabulary: the
            model replaces placeholders before the embedding lookup, so the LM's embeddings are never resized.
        num_image_tokens: placeholders per image, fixed by the adapter and the tower geometry.
        vision_model_name_or_path / text_model_name_or_path / vision_revision / text_revision: the bases.
        supervised_logits_only: when `forward` gets labels, compute the LM head only at the supervised positions and
            return `logits` [N, V] instead of [B, S, V] (off by default, as `*ForCausalLM` models return every
            position; hf_vadapter's training turns it on for speed). `forward(supervised_logits_only=...)` overrides.
    """

    model_type = "vision_adapter"
    sub_configs = {"vision_config": AutoConfig, "text_config": AutoConfig}

    def __init__(
        self,
        vision_config: Optional[Union[Dict[str, Any], PretrainedConfig]] = None,
        text_config: Optional[Union[Dict[str, Any], PretrainedConfig]] = None,
        adapter_config: Optional[Union[Dict[str, Any], AdapterConfig]] = None,
        image_size: Optional[int] = None,
        image_token: str = "<image>",
        image_token_id: Optional[int] = None,
        num_image_tokens: Optional[int] = None,
        vision_model_name_or_path: Optional[str] = None,
        vision_revision: Optional[str] = None,
        text_model_name_or_path: Optional[str] = None,
        text_revision: Optional[str] = None,
        supervised_logits_only: bool = False,
        **kwargs,
    ):
        self.vision_config = _as_config(vision_config, "vision_config")
        self.text_config = _as_config(text_config, "text_config")
        if adapter_config is None:
            adapter_config = {"adapter_type": "mlp_projector"}
        self.adapter_config = adapter_config_to_dict(adapter_config_from_dict(adapter_config))
        if image_size is None and self.vision_config is not None:
            image_size = getattr(self.vision_config, "image_size", None)
        self.image_size = image_size
        self.image_token = image_token
        self.image_token_id = image_token_id
        self.num_image_tokens = num_image_tokens
        self.vision_model_name_or_path = vision_model_name_or_path
        self.vision_revision = vision_revision
        self.text_model_name_or_path = text_model_name_or_path
        self.text_revision = text_revision
        self.supervised_logits_only = supervised_logits_only
        # PretrainedConfig.__init__ would reset the sub-configs' attention backends to None: keep the bases' own.
        kwargs.setdefault(
            "attn_implementation",
            {name: getattr(getattr(self, name), "_attn_implementation", None) for name in self.sub_configs},
        )
        super().__init__(**kwargs)

    @classmethod
    def _dict_from_json_file(cls, json_file) -> Dict[str, Any]:
        """The saved dict, with typed errors for an empty or broken file and for missing entries."""
        try:
            config_dict = super()._dict_from_json_file(json_file)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CheckpointError(
                f"{json_file} is not valid JSON ({error}); it is empty or truncated. Save the model again, or "
                "download the checkpoint again."
            ) from error
        check_saved_config(config_dict, str(json_file))
        return config_dict

    @classmethod
    def from_dict(cls, config_dict: Dict[str, Any], **kwargs) -> "VisionAdapterConfig":
        check_saved_config(config_dict, "the config dict")
        return super().from_dict(config_dict, **kwargs)

    @property
    def adapter(self) -> AdapterConfig:
        """The adapter config as its dataclass."""
        return adapter_config_from_dict(self.adapter_config)

    @property
    def vocab_size(self) -> Optional[int]:
        """The LM's vocabulary size, where transformers code reads it (the placeholder id may lie beyond it)."""
        return getattr(self.text_config, "vocab_size", None)

    @vocab_size.setter
    def vocab_size(self, value: int) -> None:
        self.text_config.vocab_size = value

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "VisionAdapterConfig":
        # A registered adapter family's file is read from the same folder or repo as the config.
        with loading_code_from(pretrained_model_name_or_path, kwargs.get("revision")):
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """Write `config.json` and, for a family added with `register_adapter`, a copy of its file beside it."""
        super().save_pretrained(save_directory, *args, **kwargs)
        code_file = family_code_file(self.adapter_config["adapter_type"])
        if code_file is not None:
            _copy_atomically(code_file, Path(save_directory) / code_file.name)


def _copy_atomically(source: Path, target: Path) -> None:
    descriptor, staging = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(descriptor)
    shutil.copyfile(source, staging)
    os.replace(staging, target)


def _as_config(value, name: str) -> Optional[PretrainedConfig]:
    if value is None or isinstance(value, PretrainedConfig):
        return value
    if isinstance(value, dict):
        if "model_type" not in value:
            raise AdapterConfigError(f"{name} needs a 'model_type' entry to know which architecture it describes.")
        values = dict(value)
        return AutoConfig.for_model(values.pop("model_type"), **values)
    raise AdapterConfigError(f"{name} must be a dict or a PretrainedConfig, got {type(value).__name__}.")


def check_saved_config(config_dict: Any, source: str) -> None:
    """Refuse a saved config that lacks the tower, LM or adapter config instead of falling back to defaults."""
    if not isinstance(config_dict, dict):
        raise AdapterConfigError(f"{source} must hold a JSON object, got {type(config_dict).__name__}.")
    missing = [name for name in REQUIRED_ENTRIES if not isinstance(config_dict.get(name), dict)]
    if missing:
        raise AdapterConfigError(
            f"{source} has no {missing} entries (each a dict). A VisionAdapterConfig is saved by "
            "`model.save_adapter(folder)` or `model.save_pretrained(folder)` with all of "
            f"{list(REQUIRED_ENTRIES)}; build a new model with `from_vision_text_pretrained` instead."
        )
