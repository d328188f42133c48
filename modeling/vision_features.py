"""Reading features out of any frozen vision tower.

The tower is run once with `output_hidden_states=True`, stopping after the deepest layer the adapter reads; the layers
an adapter asks for are picked, optionally passed through the tower's own final norm, and split into the [CLS] token
and the patch tokens. Every adapter receives the same layout, `[B, T, L, S, Dv]`: images (or samples), frames, layers
read, tokens, tower width.
"""

import contextlib
import threading
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import torch
from torch import nn

from .errors import AdapterConfigError, InvalidImageError

# Tower families whose sequence has no [CLS] token in front of the patches.
TOWERS_WITHOUT_CLS = ("siglip_vision_model", "siglip2_vision_model")
# Preprocessed pixels lie within a few units of 0 (at most about +-1000 unnormalised); far larger finite values
# (1e30 * x) overflow inside the tower and yield garbage, so they are refused like NaN.
MAX_PIXEL_MAGNITUDE = 1e4
# Where towers keep the norm that produces their last hidden state, tried in order.
FINAL_NORM_PATHS = ("layernorm", "post_layernorm", "vision_model.post_layernorm", "norm")


@dataclass(frozen=True)
class VisionGeometry:
    """What an adapter needs to know about the tower's output before seeing an image."""

    hidden_size: int
    num_layers: int
    grid_size: int  # patches per side
    num_prefix_tokens: int  # [CLS] plus register tokens in front of the patches

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def has_cls(self) -> bool:
        return self.num_prefix_tokens > 0

    def num_tokens(self, select: str) -> int:
        """Tokens per layer and frame for a `feature_select` choice."""
        return {"patch": self.num_patches, "cls": 1, "both": 1 + self.num_patches}[select]

    @classmethod
    def from_config(cls, vision_config, image_size: int) -> "VisionGeometry":
        patch_size = vision_config.patch_size
        if image_size % patch_size:
            raise AdapterConfigError(f"image_size={image_size} is not a multiple of the tower's patch size {patch_size}.")
        has_cls = vision_config.model_type not in TOWERS_WITHOUT_CLS
        return cls(
            hidden_size=vision_config.hidden_size,
            num_layers=vision_config.num_hidden_layers,
            grid_size=image_size // patch_size,
            num_prefix_tokens=int(has_cls) + getattr(vision_config, "num_register_tokens", 0),
        )


def find_final_norm(tower: nn.Module) -> Optional[nn.Module]:
    """The tower's final norm module, or None if it has none under a known name."""
    for path in FINAL_NORM_PATHS:
        module = tower
        for part in path.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.Module):
            return module
    return None


# Held while a tower's layer list is shortened, so that concurrent calls never see (or restore) a shortened list.
_TRUNCATION_LOCK = threading.Lock()


def find_layer_list(tower: nn.Module, num_layers: int) -> Optional[Tuple[nn.Module, str]]:
    """(parent, attribute) of the tower's list of `num_layers` encoder layers, or None if it has none."""
    for name, module in tower.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_layers:
            parent_name, _, attribute = name.rpartition(".")
            return tower.get_submodule(parent_name), attribute
    return None


@contextlib.contextmanager
def layers_up_to(tower: nn.Module, num_layers: int, last: int) -> Iterator[None]:
    """Run only the tower's first `last` encoder layers inside the block.

    `hidden_states[:last + 1]` are unchanged; the layers above are never read by the adapter, so skipping them saves
    their whole cost (a quarter of the tower for the default's layers 3/6/9 of 12). A tower whose layer list is not
    found runs whole.
    """
    last = max(last, 1)  # towers record hidden_states[0] through their first layer
    found = find_layer_list(tower, num_layers) if last < num_layers else None
    if found is None:
        yield
        return
    parent, attribute = found
    with _TRUNCATION_LOCK:
        full = getattr(parent, attribute)
        setattr(parent, attribute, full[:last])
        try:
            yield
        finally:
            setattr(parent, attribute, full)


def check_pixel_values(pixel_values: torch.Tensor, num_channels: int, image_size: int) -> None:
    """Reject pixel tensors of the wrong rank, size, dtype or with non-finite values, with a message that says why."""
    if not isinstance(pixel_values, torch.Tensor):
        raise InvalidImageError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}.")
    if pixel_values.ndim not in (4, 5):
        raise InvalidImageError(
            f"pixel_values must be [num_images, C, H, W] or frames [B, T, C, H, W]; got shape {tuple(pixel_values.shape)}."
        )
    if not pixel_values.is_floating_point():
        raise InvalidImageError(f"pixel_values must be a float tensor, got {pixel_values.dtype}; use the processor.")
    channels, height, width = pixel_values.shape[-3:]
    if channels != num_channels or (height, width) != (image_size, image_size):
        raise InvalidImageError(
            f"pixel_values have {channels} channels at {height}x{width}, but the tower expects {num_channels} channels "
            f"at {image_size}x{image_size}. Preprocess images with the model's processor."
        )
    largest = pixel_values.abs().amax()  # one reduction; NaN propagates, so `largest <= limit` is False for it
    if not bool(largest <= MAX_PIXEL_MAGNITUDE):
        raise InvalidImageError(
            f"pixel_values contain NaN, infinite or huge values (largest magnitude {float(largest):.3g}, the limit is "
            f"{MAX_PIXEL_MAGNITUDE:g}). Preprocess images with the model's processor."
        )


def check_image_features(
    image_features: torch.Tensor, geometry: VisionGeometry, layers: List[int], select: str
) -> None:
    """Reject precomputed tower features that are not [B, T, L, S, Dv] for this tower and adapter, or not finite."""
    if not isinstance(image_features, torch.Tensor) or not image_features.is_floating_point():
        raise InvalidImageError(f"image_features must be a float torch.Tensor, got {type(image_features).__name__}.")
    expected = (len(layers), geometry.num_tokens(select), geometry.hidden_size)
    if image_features.ndim != 5 or tuple(image_features.shape[2:]) != expected:
        raise InvalidImageError(
            f"image_features have shape {tuple(image_features.shape)}, but this model reads [B, T, L, S, Dv] with "
            f"L={expected[0]} layers, S={expected[1]} tokens ({select!r}) and Dv={expected[2]}. Compute them with "
            "model.get_image_features(pixel_values) or a FeatureCache built for this model."
        )
    if not bool(torch.isfinite(image_features).all()):
        raise InvalidImageError("image_features contain NaN or infinite values; recompute them from the images.")


def select_features(
    tower: nn.Module,
    pixel_values: torch.Tensor,
    geometry: VisionGeometry,
    layers: List[int],
    select: str,
    norm: bool,
) -> torch.Tensor:
    """Run the tower and return the chosen features as [B, T, L, S, Dv].

    `pixel_values` is [B, C, H, W] (one frame each) or [B, T, C, H, W] (frames).
    """
    frames = pixel_values.shape[1] if pixel_values.ndim == 5 else 1
    flat = pixel_values.flatten(0, 1) if pixel_values.ndim == 5 else pixel_values  # [B*T, C, H, W]
    layers = [layer % (geometry.num_layers + 1) for layer in layers]  # hidden_states has num_layers + 1 entries
    with layers_up_to(tower, geometry.num_layers, max(layers)):
        hidden_states = tower(pixel_values=flat, output_hidden_states=True).hidden_states
    stacked = torch.stack([hidden_states[layer] for layer in layers], dim=1)  # [B*T, L, P + S_patch, Dv]
    if norm:
        final_norm = find_final_norm(tower)
        if final_norm is None:
            raise AdapterConfigError(
                f"feature_norm=True, but no final norm was found on {type(tower).__name__} "
                f"(looked for {FINAL_NORM_PATHS}). Set feature_norm=False."
            )
        stacked = final_norm(stacked)
    patches = stacked[:, :, geometry.num_prefix_tokens :]  # [B*T, L, grid*grid, Dv]
    cls = stacked[:, :, :1] if geometry.has_cls else patches.mean(dim=2, keepdim=True)  # [B*T, L, 1, Dv]
    chosen = {"patch": patches, "cls": cls, "both": torch.cat([cls, patches], dim=2)}[select]
    return chosen.unflatten(0, (-1, frames))  # [B, T, L, S, Dv]
