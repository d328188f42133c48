"""eP-ALM (arXiv 2303.11403): [CLS] tokens of the last tower layers, projected and put into the top LM layers.

How it works here
-----------------
The processor expands each `<image>` into ``num_prompt_tokens + 1`` placeholders: P soft-prompt slots, then one
[CLS] slot. They are real sequence positions in front of the text that follows, so the causal mask, the position ids
and the KV cache treat them like any token: text attends to them, they never see later text.

* The [CLS] of each tower layer in ``feature_layers`` (default the last 6, after the tower's final norm) goes through
  its own linear layer (or one shared linear) into the LM width: the "levels" ``[N_img, num_levels, D]``.
* Below the injection layer L the slots hold a fixed zero vector: nothing below L depends on a trainable parameter,
  so autograd records nothing there and the backward pass stops at layer L.
* A forward pre-hook on every decoder layer ``l >= L`` overwrites the [CLS] slot's hidden state with level
  ``min((l - L) // layers_per_level, num_levels - 1)``: shallow levels early, each feeding ``layers_per_level``
  consecutive layers, the last level repeated to the top. The slot's keys/values are computed from the overwritten
  state, which is how the text sees the image. The paper's official code leaves the slot's attention row unmasked
  (it sees future text) and skips the last layer; neither is reproduced.
* The soft prompt is P vectors, either a plain embedding or re-parameterised (Embedding -> Linear -> Tanh ->
  Linear, the paper's default). ``prompt_placement="layer"`` (our default) overwrites the prompt slots the same way
  as the [CLS] slot, with the same P vectors at every layer >= L; ``"input"`` (the paper's placement) puts them at
  the input placeholders instead, from where they flow up like any token.

Why the prompt goes in at layer L by default: a trainable prompt at the input makes every layer below L part of the
backward pass, which is exactly the work eP-ALM is meant to skip; with ``"layer"`` only the layers from L up are in
the autograd graph. The input prompt steers all layers and can reach a lower loss. Both sides are measured by
``benchmarks/epalm_backward.py`` and ``benchmarks/epalm_prompt_placement.py``; ``docs/epalm.md`` has the tables.

The hooks edit only a forward whose tokens contain the slots (prefill, or an uncached step). Cached decode steps
have no placeholders, and the slots' keys/values are already in the cache, so nothing persists between forwards
(``context_persists = False``). Slots are found through ``image_token_mask`` (sequence indices), never through
position ids, which differ from sequence indices with left padding.
"""

import contextlib
import functools
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, List, Optional, Tuple

import torch
from torch import nn

from .adapter_base import AdapterOutput, VisionAdapter
from .adapter_config import AdapterConfig
from .errors import AdapterConfigError
from .lm_anatomy import LMAnatomy, get_lm_anatomy
from .vision_features import VisionGeometry

PROMPT_PLACEMENTS = ("layer", "input")


@dataclass
class EPALMConfig(AdapterConfig):
    """Config of the eP-ALM adapter.

    Args:
        feature_layers: the tower layers whose [CLS] tokens are injected, shallow to deep; level i is
            ``feature_layers[i]``. Default: the last 6 layers (the paper's N = 6). A tower with fewer layers is
            refused with an `AdapterConfigError` (set e.g. ``feature_layers=[-4, -3, -2, -1]``); it is not clamped,
            because the number of levels fixes the checkpoint's shapes.
        feature_select / feature_norm: must stay ``"cls"`` / ``True`` for the paper's recipe ([CLS] after the final
            norm; towers without a [CLS], such as SigLIP, give their mean patch token).
        injection_layer: the first LM layer L (0-based) whose input the [CLS] slot is written into. None picks
            ``round(0.6 * num_layers)``, which is the paper's 19 for a 32-layer OPT.
        layers_per_level: k, how many consecutive layers each level feeds (2 in the paper).
        shared_projection: one linear for every level (the paper's large variant) instead of one per level.
        num_prompt_tokens: P soft-prompt tokens (10 in the paper; 0 for none).
        prompt_mlp: re-parameterise the prompt as Embedding -> Linear -> Tanh -> Linear (the paper's default);
            False trains a plain embedding (the paper's large variant).
        prompt_mlp_hidden_size: the MLP's hidden width; None uses the LM width, which reproduces the paper's
            ~25M trainable parameters for ViT-B/16 + OPT-2.7B.
        prompt_placement: ``"layer"`` (default) overwrites the prompt slots with the prompt at every layer >= L,
            so no backward work is done below L; ``"input"`` prepends it at the input as the paper does, at the cost
            of a backward pass through every layer.
    """

    adapter_type: ClassVar[str] = "epalm"

    feature_layers: List[int] = field(default_factory=lambda: [-6, -5, -4, -3, -2, -1])
    feature_select: str = "cls"
    feature_norm: bool = True
    injection_layer: Optional[int] = None
    layers_per_level: int = 2
    shared_projection: bool = False
    num_prompt_tokens: int = 10
    prompt_mlp: bool = True
    prompt_mlp_hidden_size: Optional[int] = None
    prompt_placement: str = "layer"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.feature_select != "cls":
            raise AdapterConfigError(
                f"EPALMConfig injects [CLS] tokens: feature_select must be 'cls', got {self.feature_select!r}."
            )
        if self.injection_layer is not None and self.injection_layer < 0:
            raise AdapterConfigError(f"EPALMConfig.injection_layer must be >= 0, got {self.injection_layer}.")
        if self.layers_per_level < 1:
            raise AdapterConfigError(f"EPALMConfig.layers_per_level must be >= 1, got {self.layers_per_level}.")
        if self.num_prompt_tokens < 0:
            raise AdapterConfigError(f"EPALMConfig.num_prompt_tokens must be >= 0, got {self.num_prompt_tokens}.")
        if self.prompt_placement not in PROMPT_PLACEMENTS:
            raise AdapterConfigError(
                f"EPALMConfig.prompt_placement must be one of {PROMPT_PLACEMENTS}, got {self.prompt_placement!r}."
            )

    def resolved_injection_layer(self, num_lm_layers: int) -> int:
        """L for an LM with ``num_lm_layers`` decoder layers."""
        if self.injection_layer is None:
            return int(round(0.6 * num_lm_layers))
        return self.injection_layer


@dataclass
class EPALMContext:
    """What one prefill injects: the projected [CLS] levels and, for ``prompt_placement="layer"``, the prompt."""

    levels: torch.Tensor  # [N_img, num_levels, D]
    prompt: Optional[torch.Tensor]  # [P, D] or None


class SoftPrompt(nn.Module):
    """P trainable vectors ``[P, width]``, optionally re-parameterised through Linear -> Tanh -> Linear."""

    def __init__(self, num_tokens: int, width: int, mlp_hidden_size: Optional[int], init_std: float):
        super().__init__()
        self.embedding = nn.Embedding(num_tokens, width)
        self.mlp = None
        if mlp_hidden_size is not None:
            self.mlp = nn.Sequential(nn.Linear(width, mlp_hidden_size), nn.Tanh(), nn.Linear(mlp_hidden_size, width))
        else:
            nn.init.normal_(self.embedding.weight, std=init_std)  # a plain prompt starts at the LM's init scale

    def forward(self) -> torch.Tensor:
        prompt = self.embedding.weight  # [P, width]
        return prompt if self.mlp is None else self.mlp(prompt)


class _SlotInjector:
    """The decoder-layer pre-hooks and the injection plan they read while the LM runs.

    The hooks live on the LM, so every copy of the adapter must drive the same injector: PEFT's
    ``modules_to_save=["adapter"]`` runs a deep copy of the adapter, whose ``injected`` must reach the hooks that
    the original installed. Deep copies therefore share this object.
    """

    def __init__(self, injection_layer: int, layers_per_level: int):
        self.injection_layer = injection_layer
        self.layers_per_level = layers_per_level
        self.plan: Optional[Tuple[Any, ...]] = None
        self.handles: list = []

    def __deepcopy__(self, memo) -> "_SlotInjector":
        return self  # shared on purpose: the hooks on the LM call this object, whichever adapter copy injects

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def install(self, decoder_layers: nn.ModuleList) -> None:
        self.remove()
        self.handles = [
            decoder_layers[index].register_forward_pre_hook(functools.partial(self._pre_hook, index), with_kwargs=True)
            for index in range(self.injection_layer, len(decoder_layers))
        ]

    def make_plan(
        self, context: Optional[EPALMContext], image_token_mask: Optional[torch.Tensor], num_slots: int
    ) -> Optional[Tuple[Any, ...]]:
        """Slot indices and the tensors to write, or None when this forward holds no slots (a cached decode step).

        The model has already checked that the mask holds ``num_slots`` placeholders per image.
        """
        if context is None or image_token_mask is None:
            return None
        positions = image_token_mask.nonzero()  # [N_img * num_slots, 2], row-major: image after image
        if positions.shape[0] == 0:
            return None
        num_images = context.levels.shape[0]
        groups = positions.view(num_images, num_slots, 2)
        cls_index = (groups[:, -1, 0], groups[:, -1, 1])  # [N_img] rows, [N_img] columns
        prompt_index = prompt_values = None
        if context.prompt is not None:  # prompt_placement="layer"
            prompt_positions = groups[:, :-1].reshape(-1, 2)  # [N_img * P, 2]
            prompt_index = (prompt_positions[:, 0], prompt_positions[:, 1])
            prompt_values = context.prompt.repeat(num_images, 1)  # [N_img * P, D]
        return cls_index, context.levels, prompt_index, prompt_values

    def _pre_hook(self, layer_index: int, layer: nn.Module, args, kwargs):
        if self.plan is None:
            return None
        cls_index, levels, prompt_index, prompt_values = self.plan
        hidden = LMAnatomy.layer_hidden_states(args, kwargs)  # [B, S, D]
        level = min((layer_index - self.injection_layer) // self.layers_per_level, levels.shape[1] - 1)
        hidden = hidden.index_put(cls_index, levels[:, level].to(hidden.dtype))
        if prompt_index is not None:
            hidden = hidden.index_put(prompt_index, prompt_values.to(hidden.dtype))
        return LMAnatomy.replace_layer_hidden_states(args, kwargs, hidden)


class EPALM(VisionAdapter):
    """eP-ALM: per-level linear connectors from tower [CLS] tokens into LM layers >= L, plus a soft prompt."""

    context_persists = False
    reaches_into_lm = True

    def __init__(self, config: EPALMConfig, geometry: VisionGeometry, text_config):
        super().__init__()
        self.config = config
        num_tower_layers = geometry.num_layers
        for layer in config.feature_layers:
            if layer in (0, -(num_tower_layers + 1)):
                raise AdapterConfigError(
                    f"eP-ALM reads the [CLS] of tower blocks, but feature_layers holds {layer}, the embedding output "
                    f"of this {num_tower_layers}-layer tower. Use fewer levels, e.g. "
                    f"feature_layers={list(range(-min(6, num_tower_layers), 0))}."
                )
        num_lm_layers = text_config.num_hidden_layers
        self.injection_layer = config.resolved_injection_layer(num_lm_layers)
        if self.injection_layer >= num_lm_layers:
            raise AdapterConfigError(
                f"injection_layer={self.injection_layer}, but the LM has {num_lm_layers} layers (0..{num_lm_layers - 1})."
            )
        width = text_config.hidden_size
        if config.shared_projection:
            self.projection = nn.Linear(geometry.hidden_size, width)
        else:
            self.projections = nn.ModuleList(
                nn.Linear(geometry.hidden_size, width) for _ in range(len(config.feature_layers))
            )
        # Placeholders are scattered into the input embeddings, whose width differs from the hidden width in OPT
        # checkpoints with a projection (opt-350m); injected tokens are written into hidden states.
        self.input_width = getattr(text_config, "word_embed_proj_dim", None) or width
        self.prompt = None
        if config.num_prompt_tokens:
            prompt_width = self.input_width if config.prompt_placement == "input" else width
            self.prompt = SoftPrompt(
                config.num_prompt_tokens,
                prompt_width,
                (config.prompt_mlp_hidden_size or prompt_width) if config.prompt_mlp else None,
                getattr(text_config, "initializer_range", 0.02),
            )
        self._injector = _SlotInjector(self.injection_layer, config.layers_per_level)

    @property
    def num_image_tokens(self) -> int:
        return self.config.num_prompt_tokens + 1

    def attach(self, language_model: nn.Module) -> None:
        """Install the slot-overwrite pre-hooks on decoder layers L..end (raises for an LM family it cannot reach)."""
        self._injector.install(get_lm_anatomy(language_model).decoder_layers)

    def detach(self) -> None:
        self._injector.remove()
        super().detach()

    def project(self, cls_tokens: torch.Tensor) -> torch.Tensor:
        """[CLS] tokens [N, num_levels, Dv] -> levels [N, num_levels, D]."""
        if self.config.shared_projection:
            return self.projection(cls_tokens)
        return torch.stack([projection(cls_tokens[:, i]) for i, projection in enumerate(self.projections)], dim=1)

    def forward(self, image_features: torch.Tensor) -> AdapterOutput:
        """Image features [B, T, L, 1, Dv] -> placeholder embeddings [B, P + 1, D_in] and the `EPALMContext`."""
        cls_tokens = image_features[:, :, :, 0].mean(dim=1)  # [B, L, Dv]; video frames are averaged
        levels = self.project(cls_tokens)  # [B, L, D]
        num_images = cls_tokens.shape[0]
        slots = cls_tokens.new_zeros(num_images, self.num_image_tokens, self.input_width)  # fixed below L
        prompt = self.prompt() if self.prompt is not None else None  # [P, D]
        if prompt is not None and self.config.prompt_placement == "input":
            slots = torch.cat([prompt.expand(num_images, -1, -1), slots[:, -1:]], dim=1)
            prompt = None
        return AdapterOutput(tokens=slots, context=EPALMContext(levels=levels, prompt=prompt))

    @contextlib.contextmanager
    def _injected(self, context: Optional[EPALMContext], image_token_mask: Optional[torch.Tensor]) -> Iterator[None]:
        injector = self._injector
        previous = injector.plan
        injector.plan = injector.make_plan(context, image_token_mask, self.num_image_tokens)
        try:
            yield
        finally:
            injector.plan = previous
