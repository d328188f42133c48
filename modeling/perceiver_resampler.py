"""Perceiver resampler: learned latents cross-attend to the tower's tokens and become a fixed number of visual tokens.

The defaults follow the best design in PaLM2-VAdapter's ablation (Table 1): separate LayerNorms on the latents and on
the key/value inputs, no final LayerNorm, a feed-forward block in every layer, and a learned time embedding added to
the tokens of each frame. The latents attend to the concatenation of the frame tokens and themselves.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .adapter_base import AdapterOutput, VisionAdapter
from .adapter_config import AdapterConfig
from .errors import AdapterConfigError, InvalidImageError
from .vision_features import VisionGeometry


@dataclass
class PerceiverResamplerConfig(AdapterConfig):
    """Config of the perceiver resampler baseline.

    Args:
        num_latents: visual tokens produced per sample (the paper uses 256).
        depth: resampler layers (6 in the paper's baseline; more beat fewer there).
        hidden_size: width of the latents and the attention (768 in the paper).
        num_heads: attention heads.
        ffn_mult: feed-forward width as a multiple of `hidden_size`.
        max_frames: frames the time embedding covers (8 in the paper; an image is one frame).
        repeat_image_frames: repeat a single image to this many frames, as the paper does with 8; 1 keeps one.
    """

    adapter_type: ClassVar[str] = "perceiver_resampler"

    num_latents: int = 64
    depth: int = 6
    hidden_size: int = 768
    num_heads: int = 8
    ffn_mult: int = 4
    max_frames: int = 8
    repeat_image_frames: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden_size % self.num_heads:
            raise AdapterConfigError(f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}.")
        if not 1 <= self.repeat_image_frames <= self.max_frames:
            raise AdapterConfigError("repeat_image_frames must be between 1 and max_frames.")


class ResamplerLayer(nn.Module):
    """Latents attend to [inputs; latents] with separate norms, then a feed-forward block; both residual."""

    def __init__(self, hidden_size: int, num_heads: int, ffn_mult: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm_inputs = nn.LayerNorm(hidden_size)
        self.norm_latents = nn.LayerNorm(hidden_size)
        self.to_q = nn.Linear(hidden_size, hidden_size, bias=False)
        self.to_kv = nn.Linear(hidden_size, 2 * hidden_size, bias=False)
        self.to_out = nn.Linear(hidden_size, hidden_size, bias=False)
        self.ffn = nn.Sequential(
            nn.LayerNorm(hidden_size),
            nn.Linear(hidden_size, ffn_mult * hidden_size, bias=False),
            nn.GELU(),
            nn.Linear(ffn_mult * hidden_size, hidden_size, bias=False),
        )

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # [B, H, N, hd]

    def forward(self, inputs: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        # inputs: [B, N, C]; latents: [B, Q, C]
        normed_latents = self.norm_latents(latents)
        context = torch.cat([self.norm_inputs(inputs), normed_latents], dim=1)  # [B, N + Q, C]
        q = self._heads(self.to_q(normed_latents))  # [B, H, Q, hd]
        k, v = (self._heads(t) for t in self.to_kv(context).chunk(2, dim=-1))  # [B, H, N + Q, hd]
        attended = nn.functional.scaled_dot_product_attention(q, k, v)  # [B, H, Q, hd]
        latents = latents + self.to_out(attended.transpose(1, 2).flatten(2))
        return latents + self.ffn(latents)


class Resampler(nn.Module):
    """Learned latents plus a stack of `ResamplerLayer`s: [B, T, S, C] frame tokens -> [B, Q, C] latents."""

    def __init__(self, hidden_size: int, depth: int, num_heads: int, ffn_mult: int, num_latents: int, max_frames: int):
        super().__init__()
        self.max_frames = max_frames
        self.latents = nn.Parameter(torch.randn(num_latents, hidden_size) * 0.02)
        self.time_embedding = nn.Parameter(torch.zeros(max_frames, hidden_size))
        self.layers = nn.ModuleList(ResamplerLayer(hidden_size, num_heads, ffn_mult) for _ in range(depth))

    def forward(self, frame_tokens: torch.Tensor) -> torch.Tensor:
        b, t = frame_tokens.shape[:2]
        if t > self.max_frames:
            raise InvalidImageError(f"Got {t} frames, but the resampler's time embedding covers {self.max_frames}.")
        inputs = (frame_tokens + self.time_embedding[:t, None]).flatten(1, 2)  # [B, T*S, C]
        latents = self.latents.expand(b, -1, -1)  # [B, Q, C]
        for layer in self.layers:
            latents = layer(inputs, latents)
        return latents


class PerceiverResampler(VisionAdapter):
    """Perceiver resampler adapter: image features [B, T, L, S, Dv] -> visual tokens [B, num_latents, D]."""

    def __init__(self, config: PerceiverResamplerConfig, geometry: VisionGeometry, text_config):
        super().__init__()
        self.config = config
        self.input_projection = nn.Linear(geometry.hidden_size * len(config.feature_layers), config.hidden_size)
        self.resampler = Resampler(
            config.hidden_size, config.depth, config.num_heads, config.ffn_mult, config.num_latents, config.max_frames
        )
        self.output_projection = nn.Linear(config.hidden_size, text_config.hidden_size)

    @property
    def num_image_tokens(self) -> int:
        return self.config.num_latents

    def forward(self, image_features: torch.Tensor) -> AdapterOutput:
        """Image features [B, T, L, S, Dv] -> visual tokens [B, Q, D]."""
        if image_features.shape[1] == 1 and self.config.repeat_image_frames > 1:
            image_features = image_features.expand(-1, self.config.repeat_image_frames, -1, -1, -1)
        frame_tokens = image_features.permute(0, 1, 3, 2, 4).flatten(3)  # [B, T, S, L*Dv]
        latents = self.resampler(self.input_projection(frame_tokens))  # [B, Q, C]
        return AdapterOutput(tokens=self.output_projection(latents))  # [B, Q, D]
