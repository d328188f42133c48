"""The registry of adapter families: `adapter_type` -> (config dataclass, module class)."""

from typing import Any, Dict, Tuple, Type, Union

from .adapter_base import VisionAdapter
from .adapter_config import AdapterConfig
from .errors import AdapterConfigError
from .epalm import EPALM, EPALMConfig
from .llama_adapter_v2 import LlamaAdapterV2, LlamaAdapterV2Config
from .mlp_projector import MLPProjector, MLPProjectorConfig
from .palm2_vadapter import PaLM2VAdapter, PaLM2VAdapterConfig
from .perceiver_resampler import PerceiverResampler, PerceiverResamplerConfig
from .vision_features import VisionGeometry

ADAPTER_REGISTRY: Dict[str, Tuple[Type[AdapterConfig], Type[VisionAdapter]]] = {
    config_class.adapter_type: (config_class, module_class)
    for config_class, module_class in (
        (MLPProjectorConfig, MLPProjector),
        (PerceiverResamplerConfig, PerceiverResampler),
        (PaLM2VAdapterConfig, PaLM2VAdapter),
        (EPALMConfig, EPALM),
        (LlamaAdapterV2Config, LlamaAdapterV2),
    )
}


def adapter_config_from_dict(values: Union[Dict[str, Any], AdapterConfig]) -> AdapterConfig:
    """Turn a saved adapter config dict (with its `adapter_type`) back into its dataclass."""
    if isinstance(values, AdapterConfig):
        return values
    adapter_type = values.get("adapter_type")
    if adapter_type not in ADAPTER_REGISTRY:
        raise AdapterConfigError(
            f"Unknown adapter_type {adapter_type!r}. This hf_vadapter knows {sorted(ADAPTER_REGISTRY)}; a newer "
            "hf_vadapter may know more."
        )
    return ADAPTER_REGISTRY[adapter_type][0].from_dict(values)


def build_adapter(config: AdapterConfig, geometry: VisionGeometry, text_config) -> VisionAdapter:
    """Instantiate the module of `config`'s family."""
    for layer in config.feature_layers:
        if not -(geometry.num_layers + 1) <= layer <= geometry.num_layers:
            raise AdapterConfigError(
                f"feature_layers holds {layer}, but the tower has {geometry.num_layers} layers "
                f"(valid indices are {-(geometry.num_layers + 1)}..{geometry.num_layers})."
            )
    return ADAPTER_REGISTRY[config.adapter_type][1](config, geometry, text_config)
