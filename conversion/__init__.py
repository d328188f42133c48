"""Converters: packaged backbones to HF checkpoints, original adapter weights to hf_vadapter, and the adapter-only Hub push."""

from .hub import push_adapter

__all__ = ["push_adapter"]
