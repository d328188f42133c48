"""LLaVA-style MLP projector: tower features, optionally pooled, projected into the LM's embedding width."""

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from transformers.activations import ACT2FN

from .adapter_base import VisionAdapter
from .adapter_config import AdapterConfig
from .errors import AdapterConfigError
from .vision_features import VisionGeometry


@dataclass
class MLPProjectorConfig(AdapterConfig):
    """Config of the MLP projector baseline.

    Args:
        num_layers: 1 (a linear layer) or 2 (linear, activation, linear, as in LLaVA-1.5).
        hidden_act: activation between the two layers.
        pool_size: merge `pool_size x pool_size` neighbouring patches into one visual token before projecting
            (1 keeps every patch); pooling 2 turns 16x16 patches into 64 visual tokens.
        pool_mode: how merged patches become one token. "mean" averages them; "concat" stacks their channels
            (space-to-depth, the "pixel shuffle" of Idefics3), so a small object covering one patch of the cell
            is not diluted by the background around it, at the cost of a `pool_size**2` times wider first layer.
        input_norm: LayerNorm each layer's features before concatenating them. Hidden states of a tower's early
            and late layers differ in scale by an order of magnitude (DINOv2-small: std 0.05 at layer 3, 2.2 at
            layer 12), so without it the projector starts out nearly blind to the early layers.

    Several `feature_layers` are concatenated along the channels, as LLaVA does with multi-layer features.
    """

    adapter_type: ClassVar[str] = "mlp_projector"

    num_layers: int = 2
    hidden_act: str = "gelu"
    pool_size: int = 1
    input_norm: bool = True
    pool_mode: str = "mean"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_layers not in (1, 2):
            raise AdapterConfigError(f"MLPProjectorConfig.num_layers must be 1 or 2, got {self.num_layers}.")
        if self.pool_size < 1:
            raise AdapterConfigError(f"MLPProjectorConfig.pool_size must be >= 1, got {self.pool_size}.")
        if self.pool_mode not in ("mean", "concat"):
            raise AdapterConfigError(f"MLPProjectorConfig.pool_mode must be 'mean' or 'concat', got {self.pool_mode!r}.")


class MLPProjector(VisionAdapter):
    """Maps image features [B, T, L, S, Dv] to visual tokens [B, T * S', D] with S' the (pooled) token count."""

    def __init__(self, config: MLPProjectorConfig, geometry: VisionGeometry, text_config):
        super().__init__()
        self.config = config
        self.geometry = geometry
        if config.pool_size > 1 and config.feature_select != "patch":
            raise AdapterConfigError("MLPProjectorConfig.pool_size > 1 pools the patch grid: use feature_select='patch'.")
        if config.pool_size > 1 and geometry.grid_size % config.pool_size:
            raise AdapterConfigError(
                f"pool_size={config.pool_size} does not divide the tower's {geometry.grid_size}x{geometry.grid_size} "
                "patch grid."
            )
        self.input_norm = nn.LayerNorm(geometry.hidden_size) if config.input_norm else nn.Identity()
        in_features = geometry.hidden_size * len(config.feature_layers)
        if config.pool_mode == "concat":
            in_features *= config.pool_size**2
        layers = [nn.Linear(in_features, text_config.hidden_size)]
        if config.num_layers == 2:
            layers += [ACT2FN[config.hidden_act], nn.Linear(text_config.hidden_size, text_config.hidden_size)]
        self.mlp = nn.Sequential(*layers)

    @property
    def num_image_tokens(self) -> int:
        return self.geometry.num_tokens(self.config.feature_select) // self.config.pool_size**2

    def _pool(self, features: torch.Tensor) -> torch.Tensor:
        # features: [N, S, C] with S = grid * grid patch tokens
        n, _, c = features.shape
        grid, pool = self.geometry.grid_size, self.config.pool_size
        if self.config.pool_mode == "concat":
            cells = grid // pool
            features = features.reshape(n, cells, pool, cells, pool, c).permute(0, 1, 3, 2, 4, 5)
            return features.reshape(n, cells * cells, pool * pool * c)  # [N, g*g, p*p*C]
        features = features.transpose(1, 2).reshape(n, c, grid, grid)
        features = nn.functional.avg_pool2d(features, pool)  # [N, C, g, g]
        return features.flatten(2).transpose(1, 2)  # [N, g*g, C]

    def pooled_features(self, image_features: torch.Tensor) -> torch.Tensor:
        """What the MLP reads: image features [B, T, L, S, Dv], normed and pooled, as [B*T, S', L*Dv] (or
        [B*T, S', p*p*L*Dv] with `pool_mode="concat"`)."""
        b, t, num_layers, s, d = image_features.shape
        image_features = self.input_norm(image_features)
        features = image_features.permute(0, 1, 3, 2, 4).reshape(b * t, s, num_layers * d)  # [B*T, S, L*Dv]
        return self._pool(features) if self.config.pool_size > 1 else features

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        b, t = image_features.shape[:2]
        tokens = self.mlp(self.pooled_features(image_features))  # [B*T, S', D]
        return tokens.reshape(b, t * tokens.shape[1], tokens.shape[2])  # [B, T*S', D]
