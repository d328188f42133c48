"""hf_vadapter: parameter-efficient vision-language adapters between any frozen vision tower and any frozen causal LM.

Importing the package registers `VisionAdapterConfig`, `VisionAdapterForCausalLM` and `VisionAdapterProcessor` with
the transformers Auto classes, so `AutoModelForCausalLM.from_pretrained(folder)` works in-process without
`trust_remote_code`.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
)

from .lora import lora_for_language_model
from .modeling.adapter_config import AdapterConfig
from .modeling.adapters import ADAPTER_REGISTRY
from .modeling.configuration_vadapter import VisionAdapterConfig
from .modeling.epalm import EPALMConfig
from .modeling.errors import (
    AdapterConfigError,
    BackboneMismatchError,
    CheckpointError,
    ImageTokenMismatchError,
    InvalidDatasetError,
    InvalidImageError,
    InvalidInputError,
    InvalidPromptError,
    NonFiniteError,
    UnsupportedArchitectureError,
    VisionAdapterError,
)
from .modeling.llama_adapter_v2 import LlamaAdapterV2Config
from .modeling.mlp_projector import MLPProjectorConfig
from .modeling.modeling_vadapter import VisionAdapterForCausalLM
from .modeling.palm2_vadapter import PaLM2VAdapterConfig
from .modeling.perceiver_resampler import PerceiverResamplerConfig
from .modeling.processing_vadapter import VisionAdapterProcessor
from .version import __version__

AutoConfig.register(VisionAdapterConfig.model_type, VisionAdapterConfig, exist_ok=True)
for _auto_class in (AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText):
    _auto_class.register(VisionAdapterConfig, VisionAdapterForCausalLM, exist_ok=True)
AutoProcessor.register(VisionAdapterConfig, VisionAdapterProcessor, exist_ok=True)

__all__ = [
    "ADAPTER_REGISTRY",
    "AdapterConfig",
    "AdapterConfigError",
    "BackboneMismatchError",
    "CheckpointError",
    "EPALMConfig",
    "ImageTokenMismatchError",
    "InvalidDatasetError",
    "InvalidImageError",
    "InvalidInputError",
    "InvalidPromptError",
    "LlamaAdapterV2Config",
    "MLPProjectorConfig",
    "NonFiniteError",
    "PaLM2VAdapterConfig",
    "PerceiverResamplerConfig",
    "UnsupportedArchitectureError",
    "VisionAdapterConfig",
    "VisionAdapterError",
    "VisionAdapterForCausalLM",
    "VisionAdapterProcessor",
    "__version__",
    "lora_for_language_model",
]
