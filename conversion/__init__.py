"""Converters: packaged backbones to HF checkpoints, and original adapter weights to hf_vadapter checkpoints."""

from .original_epalm import convert_epalm_checkpoint
from .original_llama_adapter import convert_llama_adapter_v2_checkpoint

__all__ = ["convert_epalm_checkpoint", "convert_llama_adapter_v2_checkpoint"]
