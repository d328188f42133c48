"""The module protocol every adapter family implements.

Prefix adapters (MLP projector, perceiver resampler, PaLM2-VAdapter) only map image features to visual tokens that
the model places at the `<image>` placeholders. In-layer adapters (eP-ALM, LLaMA-Adapter V2) also reach into the LM:
`attach` installs their hooks once, and `injected` hands them the per-forward context while the LM runs.
"""

import contextlib
from typing import Any, Iterator, Optional, Tuple

import torch
from torch import nn


class VisionAdapter(nn.Module):
    """Base class of the adapter modules. Subclasses implement `forward` and `num_image_tokens`."""

    # True when decode steps need the context computed at prefill (the model then carries it through `generate`).
    context_persists: bool = False
    # True for adapters whose hooks run inside the LM's layers (their parameters then meet the LM's dtype there).
    reaches_into_lm: bool = False

    @property
    def num_image_tokens(self) -> int:
        """Placeholders per image (or per sample of frames) that the processor must insert."""
        raise NotImplementedError

    def embed_images(self, image_features: torch.Tensor) -> Tuple[Optional[torch.Tensor], Any]:
        """Image features [B, T, L, S, Dv] -> (visual tokens [B, N, D] for the placeholders, in-layer context)."""
        return self(image_features), None

    def attach(self, language_model: nn.Module) -> None:
        """Install hooks into the frozen LM. Prefix adapters need none."""

    @contextlib.contextmanager
    def injected(self, context: Any, image_token_mask: Optional[torch.Tensor]) -> Iterator[None]:
        """Make `context` visible to the hooks while the LM runs; `image_token_mask` is [B, S] (or None)."""
        yield

    def trainable_base_parameter_names(self) -> Tuple[str, ...]:
        """Names (relative to the LM) of frozen-LM parameters this adapter trains, such as unfrozen norms."""
        return ()

    def load_initial_weights(self, **hub_kwargs) -> None:
        """Load pretrained weights a *new* adapter starts from (PaLM2-VAdapter's tiny LM). Most adapters need none.

        Called by `from_vision_text_pretrained` when it builds a new adapter, never when trained adapter weights are
        loaded: a saved adapter must rebuild from its config alone.
        """
