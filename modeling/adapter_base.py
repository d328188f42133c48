"""The protocol between `VisionAdapterForCausalLM` and an adapter family: what the model calls, and what it may ask.

What the model calls, in order (docs/adding_an_adapter.md walks through a complete family):

1. `__init__(config, geometry, text_config)`: build the trainable modules from the family's `AdapterConfig`, the
   tower's `VisionGeometry` and the LM's config.
2. `attach(language_model)`: once, after construction. Prefix adapters need nothing; in-layer adapters install their
   hooks here and register each handle with `_keep_hook`, so `detach()` can remove them again.
3. `embed_images(image_features, prompt_embeds)` for every forward with images: it runs `forward` and checks that the
   result is an `AdapterOutput`. `forward` means one thing in every family: tower features [B, T, L, S, Dv] ->
   `AdapterOutput`. An adapter that declares `reads_prompt` also gets `prompt_embeds` [B, D]: the mean input
   embedding of the text before each image in its sequence (the question, when the image follows it).
4. `injected(context, image_token_mask)` around the LM's forward: in-layer adapters implement `_injected`, which makes
   the context visible to their hooks. Outside it (or while `disable_adapter_layers()` holds) the LM is the plain LM.

Optional capabilities, declared here with their neutral defaults, so that training, the CLI and the demo ask the
adapter instead of testing its type: `reaches_into_lm`, `context_persists`, `trainable_base_parameter_names`,
`parameter_groups` / `routes_gradients_by_modality` (disjoint training), `shows_expert_context` (what a UI shows),
`reads_prompt` and `load_initial_weights`. The stage handoff (`supports_stage_handoff` / `from_previous_stage`) lives on the config,
because it decides how a config is built.
"""

import contextlib
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn


@dataclass
class AdapterOutput:
    """What an adapter gives the model for a batch of images.

    Attributes:
        tokens: visual tokens [N_img, N, D] that replace the `num_image_tokens` placeholders of each image (N ==
            `num_image_tokens`, D the LM's input width), or None for adapters that put nothing into the sequence.
        context: anything the adapter's own hooks read inside the LM during this forward (handed back through
            `injected`), or None for prefix adapters. With `context_persists`, `generate` carries it to decode steps.
    """

    tokens: Optional[torch.Tensor] = None
    context: Any = None


class VisionAdapter(nn.Module):
    """Base class of the adapter modules. Subclasses implement `forward` (-> `AdapterOutput`) and `num_image_tokens`."""

    # True when decode steps need the context computed at prefill (the model then carries it through `generate`).
    context_persists: bool = False
    # True for adapters whose hooks run inside the LM's layers (their parameters then meet the LM's dtype there).
    reaches_into_lm: bool = False
    # True when a UI should offer a free-text context box next to the image (adapters trained on text-only
    # instructions as well as on images follow such context best).
    shows_expert_context: bool = False

    # ------------------------------------------------------------------------------------------ images

    @property
    def num_image_tokens(self) -> int:
        """Placeholders per image (or per sample of frames) that the processor must insert."""
        raise NotImplementedError

    @property
    def reads_prompt(self) -> bool:
        """True when `forward` also takes `prompt_embeds` [B, D], the mean input embedding of the text before each
        image (so its visual tokens can depend on the question)."""
        return False

    def forward(self, image_features: torch.Tensor) -> AdapterOutput:
        """Image features [B, T, L, S, Dv] -> `AdapterOutput` (tokens [B, N, D] and/or in-layer context)."""
        raise NotImplementedError

    def embed_images(self, image_features: torch.Tensor, prompt_embeds: Optional[torch.Tensor] = None) -> AdapterOutput:
        """What the model calls: `forward` (with `prompt_embeds` [B, D] when the adapter `reads_prompt`; zeros stand
        for "no text before the image"), with a clear error when a family returns something else."""
        if self.reads_prompt:
            output = self(image_features, prompt_embeds=prompt_embeds)
        else:
            output = self(image_features)
        if not isinstance(output, AdapterOutput):
            raise TypeError(
                f"{type(self).__name__}.forward returned {type(output).__name__}; adapters return "
                "AdapterOutput(tokens=..., context=...) (see modeling/adapter_base.py)."
            )
        return output

    # ------------------------------------------------------------------------------------------ hook lifecycle

    def attach(self, language_model: nn.Module) -> None:
        """Install hooks into the frozen LM (register each handle with `_keep_hook`). Prefix adapters need none."""

    def detach(self) -> None:
        """Remove every hook `attach` installed: the LM becomes the plain LM again (`attach` may then run again)."""
        for handle in self.__dict__.pop("_hook_handles", []):
            handle.remove()

    def _keep_hook(self, handle: Any) -> None:
        # Kept in __dict__, not as a module attribute: handles are neither parameters nor state to save.
        self.__dict__.setdefault("_hook_handles", []).append(handle)

    def disable_adapter_layers(self) -> None:
        """Keep the hooks installed but make them do nothing (as PEFT's `disable_adapter_layers`)."""
        self.__dict__["_hooks_disabled"] = True

    def enable_adapter_layers(self) -> None:
        self.__dict__["_hooks_disabled"] = False

    @property
    def adapter_layers_enabled(self) -> bool:
        return not self.__dict__.get("_hooks_disabled", False)

    @contextlib.contextmanager
    def injected(self, context: Any, image_token_mask: Optional[torch.Tensor]) -> Iterator[None]:
        """Make `context` visible to the hooks while the LM runs; `image_token_mask` is [B, S] (or None)."""
        if not self.adapter_layers_enabled:
            yield
            return
        with self._injected(context, image_token_mask):
            yield

    @contextlib.contextmanager
    def _injected(self, context: Any, image_token_mask: Optional[torch.Tensor]) -> Iterator[None]:
        """Family-specific part of `injected`; prefix adapters keep this no-op."""
        yield

    # ------------------------------------------------------------------------------------------ capabilities

    def trainable_base_parameter_names(self) -> Tuple[str, ...]:
        """Names (relative to the LM) of frozen-LM parameters this adapter trains, such as unfrozen norms."""
        return ()

    @property
    def routes_gradients_by_modality(self) -> bool:
        """True when each forward trains only the parameter group of its modality (`parameter_groups`): the adapter
        routes the gradients itself, so a forward must then hold only image rows or only text rows."""
        return False

    def parameter_groups(self, prefix: str = "adapter.", base_prefix: str = "language_model.") -> Dict[str, List[str]]:
        """{"vision": names, "instruction": names} of disjoint training, as the model's `named_parameters()` names
        them; empty for adapters that train every parameter on every batch."""
        return {}

    def load_initial_weights(self, **hub_kwargs) -> None:
        """Load pretrained weights a *new* adapter starts from (PaLM2-VAdapter's tiny LM). Most adapters need none.

        Called by `from_vision_text_pretrained` when it builds a new adapter, never when trained adapter weights are
        loaded: a saved adapter must rebuild from its config alone.
        """
