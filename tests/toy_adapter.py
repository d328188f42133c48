"""A sixth adapter family, written as a user would outside hf_vadapter (docs/adding_an_adapter.md shows this file).

Mean pooling over the patch tokens to `num_tokens` groups, then one linear layer into the LM width. The file is saved
next to every checkpoint of the family and imported from there with `trust_remote_code=True`: it imports its siblings
relatively, with hf_vadapter as the fallback when it is imported as a plain module.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

try:  # as remote code, next to the checkpoint
    from .adapter_base import AdapterOutput, VisionAdapter
    from .adapter_config import AdapterConfig
    from .adapters import register_adapter
except ImportError:  # as a module of the user's own code
    from hf_vadapter.modeling.adapter_base import AdapterOutput, VisionAdapter
    from hf_vadapter.modeling.adapter_config import AdapterConfig
    from hf_vadapter.modeling.adapters import register_adapter


@dataclass
class PooledLinearConfig(AdapterConfig):
    """num_tokens: visual tokens per image (the patch tokens are averaged in that many contiguous groups)."""

    adapter_type: ClassVar[str] = "pooled_linear"
    num_tokens: int = 4


class PooledLinear(VisionAdapter):
    """Image features [B, T, L, S, Dv] -> visual tokens [B, num_tokens, D]."""

    def __init__(self, config: PooledLinearConfig, geometry, text_config):
        super().__init__()
        self.config = config
        self.projection = nn.Linear(geometry.hidden_size * len(config.feature_layers), text_config.hidden_size)

    @property
    def num_image_tokens(self) -> int:
        return self.config.num_tokens

    def forward(self, image_features: torch.Tensor) -> AdapterOutput:
        tokens = image_features.mean(dim=1).permute(0, 2, 1, 3).flatten(2)  # [B, S, L*Dv], frames averaged
        groups = torch.tensor_split(tokens, self.config.num_tokens, dim=1)
        pooled = torch.stack([group.mean(dim=1) for group in groups], dim=1)  # [B, num_tokens, L*Dv]
        return AdapterOutput(tokens=self.projection(pooled))  # [B, num_tokens, D]


register_adapter(PooledLinearConfig, PooledLinear)
