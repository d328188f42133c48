"""LLaMA-Adapter V2 (arXiv 2304.15010, on V1 arXiv 2303.16199) as an in-layer adapter for any LM the anatomy knows.

What the paper describes, and what this module builds (the released code differs; the paper is the spec):

- **Adaption prompts, late layers.** Each of the last K layers gets P learnable prompt tokens. Their keys and values
  come from the layer's own k/v projections (no rotary); every query position attends to them with a separate fp32
  softmax, the result is multiplied per head by ``tanh(gate)`` (gate zero-initialised) and added to the attention
  output through the layer's output projection.
- **Early fusion.** The image's global tower feature is projected into the LM width and added to each of
  ``num_visual_tokens`` learnable visual queries (V1's "prompt + Repeat(visual feature)"); these visual tokens enter
  only the first ``num_early_layers`` layers, through the same zero-init gated attention. They are the in-layer
  context: nothing is put into the token sequence (``num_image_tokens == 0``), and decode steps keep attending to
  them (``context_persists``; the model carries ``adapter_context`` through ``generate``).
- **Bias and scale tuning.** Every linear of the decoder layers becomes ``y = s * (W x + b)`` (``s = 1``, ``b = 0``
  at init; an existing bias stays inside: ``s * (W x + b0 + b)``), and every norm of the LM is unfrozen.
- **Disjoint parameter groups.** Image-text batches train only the ``"vision"`` group (visual projection, visual
  queries, early gates); text-only batches train only the ``"instruction"`` group (prompts, late gates, biases,
  scales, norms). See ``LlamaAdapterV2.parameter_groups`` and ``LlamaAdapterV2.gradient_group``.

With every gate at zero and ``s = 1, b = 0`` the model is exactly the frozen LM (bit for bit), with or without images.

Hooks (Recipe A of the LM anatomy): a forward hook on each linear (bias/scale), on each attention with prompts or
visual tokens (the gated branch) and on each norm (only to block its gradient on image batches). They are installed
once by ``attach`` and act only inside ``injected(...)``: outside it the LM is the plain LM.

Gradient routing: inside ``injected`` the hooks use ``.detach()``ed tensors for the group that the batch must not
train, so its parameters get no gradient at all (``grad`` stays None, and ``torch.optim.AdamW`` skips them: no
momentum, no weight decay), and gradients accumulated over micro-batches keep each group's own sum. By default the
presence of images decides (``disjoint_groups=True``). This is the only routing mechanism; the trainer's part is to
split a mixed batch (rows with and without images) into its image rows and its text rows, each run as its own forward
(``hf_vadapter.training.joint_training.split_by_image`` / ``joint_loss`` do that).
"""

import contextlib
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

from .adapter_base import AdapterOutput, VisionAdapter
from .adapter_config import AdapterConfig
from .errors import AdapterConfigError, ImageTokenMismatchError
from .lm_anatomy import LMAnatomy, get_lm_anatomy
from .vision_features import VisionGeometry

GROUPS = ("vision", "instruction")
VISION_PARAMETERS = ("visual_projection", "visual_norm", "visual_queries", "visual_gates")
# The paper's V1 puts adaption prompts into 30 of LLaMA-7B's 32 layers; by default the same share of the LM's layers.
PAPER_PROMPT_LAYER_SHARE = 30 / 32


@dataclass
class LlamaAdapterV2Config(AdapterConfig):
    """Config of LLaMA-Adapter V2.

    Args:
        use_prompts: learnable adaption prompts in the last `num_prompt_layers` layers.
        num_prompt_tokens: P, prompt tokens per layer (10 in the paper).
        num_prompt_layers: K, the last K layers get prompts. None: the paper's share (30 of 32 layers), never
            reaching into the early-fusion layers (a 32-layer LM with `num_early_layers=1` gets 30; a 2-layer LM 1).
        use_early_fusion: visual tokens enter the first `num_early_layers` layers. Without it the adapter has no
            visual path and refuses images.
        num_early_layers: how many layers, from the first, see the visual tokens (1 in the paper).
        num_visual_tokens: visual tokens per image: learnable queries, each plus the projected global feature
            (about 20 in the paper).
        use_bias_scale: `y = s * (W x + b)` on every linear of the decoder layers.
        train_norms: unfreeze every norm of the LM (they are saved with the adapter).
        disjoint_groups: image batches train only the "vision" group, text-only batches only the "instruction"
            group (the paper's joint training). False trains every parameter on every batch.
        prompt_init_std: standard deviation of the prompts and visual queries at init (the scale of the normalised
            hidden states that the k/v projections usually see; the paper does not state it).

    The global image feature is the selected tower tokens averaged (the [CLS] token itself with the default
    `feature_select="cls"`), after the tower's final norm (`feature_norm=True`), concatenated over `feature_layers`
    (V1's multi-scale features when several layers are named) and averaged over frames.
    """

    adapter_type: ClassVar[str] = "llama_adapter_v2"

    feature_select: str = "cls"
    feature_norm: bool = True
    use_prompts: bool = True
    num_prompt_tokens: int = 10
    num_prompt_layers: Optional[int] = None
    use_early_fusion: bool = True
    num_early_layers: int = 1
    num_visual_tokens: int = 20
    use_bias_scale: bool = True
    train_norms: bool = True
    disjoint_groups: bool = True
    prompt_init_std: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("num_prompt_tokens", "num_early_layers", "num_visual_tokens"):
            if int(getattr(self, name)) < 1:
                raise AdapterConfigError(f"LlamaAdapterV2Config.{name} must be >= 1, got {getattr(self, name)}.")
        if self.num_prompt_layers is not None and self.num_prompt_layers < 1:
            raise AdapterConfigError(
                f"LlamaAdapterV2Config.num_prompt_layers must be >= 1 or None, got {self.num_prompt_layers}."
            )
        if not (self.use_prompts or self.use_early_fusion or self.use_bias_scale or self.train_norms):
            raise AdapterConfigError("LlamaAdapterV2Config switches everything off: nothing would train.")

    def layer_plan(self, num_layers: int) -> Tuple[List[int], List[int]]:
        """(early-fusion layer indices, prompt layer indices) for an LM with `num_layers` decoder layers."""
        early = list(range(self.num_early_layers)) if self.use_early_fusion else []
        if len(early) > num_layers:
            raise AdapterConfigError(f"num_early_layers={self.num_early_layers}, but the LM has {num_layers} layers.")
        if not self.use_prompts:
            return early, []
        count = self.num_prompt_layers
        if count is None:
            count = max(1, min(num_layers - len(early), math.floor(num_layers * PAPER_PROMPT_LAYER_SHARE)))
        if count > num_layers:
            raise AdapterConfigError(f"num_prompt_layers={count}, but the LM has {num_layers} layers.")
        return early, list(range(num_layers - count, num_layers))


@dataclass
class _Injection:
    """What the hooks need during one LM forward."""

    adapter: "LlamaAdapterV2"
    visual_tokens: Optional[torch.Tensor]  # [B, Nv, D] or None
    blocked: Optional[str]  # the group whose tensors are detached in this forward, or None


class _SharedHooks:
    """The hooks installed into the LM, and the forward they currently serve.

    PEFT's `modules_to_save` deep-copies the adapter and runs the copy: the copy must drive the same hooks (and must
    not deep-copy the LM), so deep copies share this object, and the hooks act with whichever adapter is injecting.
    """

    def __init__(self, anatomy: LMAnatomy):
        self.anatomy = anatomy
        self.handles: List[Any] = []
        self.linear_keys: Dict[nn.Module, str] = {}  # LM linear module -> its key in the bias/scale dicts
        self.current: Optional[_Injection] = None
        self.group_override: Optional[str] = None
        self.recomputing_norm = False

    def __deepcopy__(self, memo) -> "_SharedHooks":
        return self  # shared on purpose (see the class docstring): the LM's hooks call this one object

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def sanitize_module_name(name: str) -> str:
    """A module name as a ParameterDict key: dots (not allowed there) become dashes (never in attribute names)."""
    return name.replace(".", "-")


class LlamaAdapterV2(VisionAdapter):
    """LLaMA-Adapter V2: image features [B, T, L, S, Dv] -> visual tokens [B, Nv, D] used inside the early layers."""

    context_persists = True
    reaches_into_lm = True
    shows_expert_context = True  # trained on text-only instructions too: it follows a free-text context best

    def __init__(self, config: LlamaAdapterV2Config, geometry: VisionGeometry, text_config):
        super().__init__()
        self.config = config
        self.geometry = geometry
        num_layers = text_config.num_hidden_layers
        hidden, num_heads = text_config.hidden_size, text_config.num_attention_heads
        self.early_layers, self.prompt_layers = config.layer_plan(num_layers)
        if self.prompt_layers:
            self.prompts = nn.Parameter(
                torch.randn(len(self.prompt_layers), config.num_prompt_tokens, hidden) * config.prompt_init_std
            )  # [K, P, D]
            self.prompt_gates = nn.Parameter(torch.zeros(len(self.prompt_layers), num_heads))  # [K, nH]
        if self.early_layers:
            in_features = geometry.hidden_size * len(config.feature_layers)
            self.visual_projection = nn.Linear(in_features, hidden)
            self.visual_norm = nn.LayerNorm(hidden)
            self.visual_queries = nn.Parameter(torch.randn(config.num_visual_tokens, hidden) * config.prompt_init_std)
            self.visual_gates = nn.Parameter(torch.zeros(len(self.early_layers), num_heads))  # [E, nH]
        self.linear_bias = nn.ParameterDict()
        self.linear_scale = nn.ParameterDict()
        self._hooks: Optional[_SharedHooks] = None
        self._norm_parameter_names: Tuple[str, ...] = ()

    @property
    def num_image_tokens(self) -> int:
        return 0  # the visual tokens live inside the early layers, not in the token sequence

    # ------------------------------------------------------------------------------------------ images

    def forward(self, image_features: torch.Tensor) -> AdapterOutput:
        """Image features [B, T, L, S, Dv] -> no placeholder tokens; visual tokens [B, Nv, D] as the context."""
        if not self.early_layers:
            raise AdapterConfigError(
                "This LlamaAdapterV2Config has use_early_fusion=False: the adapter has no visual path. Pass text only."
            )
        global_feature = image_features.mean(dim=(1, 3)).flatten(1)  # [B, L*Dv]: mean over frames and tokens
        projected = self.visual_norm(self.visual_projection(global_feature))  # [B, D]
        return AdapterOutput(tokens=None, context=self.visual_queries[None] + projected[:, None])  # [B, Nv, D]

    # ------------------------------------------------------------------------------------------ hooks

    def attach(self, language_model: nn.Module) -> None:
        if self._hooks is not None:
            raise AdapterConfigError("This LlamaAdapterV2 is already attached to a language model.")
        anatomy = get_lm_anatomy(language_model)  # UnsupportedArchitectureError names the supported types
        hooks = _SharedHooks(anatomy)
        if self.config.use_bias_scale:
            for name, module in anatomy.linear_layers():
                key = sanitize_module_name(name)
                out_features = module.weight.shape[0] if isinstance(module, nn.Linear) else module.weight.shape[1]
                if key not in self.linear_bias:  # a re-attach after `detach` keeps the trained values
                    self.linear_bias[key] = nn.Parameter(torch.zeros(out_features, dtype=module.weight.dtype))
                    self.linear_scale[key] = nn.Parameter(torch.ones(out_features, dtype=module.weight.dtype))
                hooks.linear_keys[module] = key
                hooks.handles.append(module.register_forward_hook(self._make_linear_hook(hooks, key)))
        for index in sorted(set(self.early_layers) | set(self.prompt_layers)):
            attention = anatomy.attention(index)
            hooks.handles.append(
                attention.register_forward_hook(self._make_attention_hook(hooks, index), with_kwargs=True)
            )
        if self.config.train_norms:
            names = []
            for name, module in anatomy.norm_layers():
                names += [f"{name}.{p}" for p, _ in module.named_parameters(recurse=False)]
                hooks.handles.append(module.register_forward_hook(self._make_norm_hook(hooks), with_kwargs=True))
            self._norm_parameter_names = tuple(names)
        self._hooks = hooks

    def detach(self) -> None:
        """Remove every hook from the LM (it becomes the plain LM again); the trained parameters stay."""
        if self._hooks is not None:
            self._hooks.remove()
            self._hooks = None
        super().detach()

    def trainable_base_parameter_names(self) -> Tuple[str, ...]:
        return self._norm_parameter_names

    @contextlib.contextmanager
    def _injected(self, context: Optional[torch.Tensor], image_token_mask: Optional[torch.Tensor]) -> Iterator[None]:
        hooks = self._hooks
        if hooks is None:  # detached: the LM is the plain LM
            yield
            return
        if context is not None and image_token_mask is not None and context.shape[0] != image_token_mask.shape[0]:
            raise _one_image_per_row_error(context.shape[0], image_token_mask.shape[0])
        blocked = None
        if torch.is_grad_enabled():
            self._refuse_gradient_checkpointing(hooks.anatomy)
            group = hooks.group_override
            if group is None and self.config.disjoint_groups:
                group = "vision" if context is not None else "instruction"
            blocked = {"vision": "instruction", "instruction": "vision"}.get(group)
        previous = hooks.current
        hooks.current = _Injection(self, context, blocked)
        try:
            yield
        finally:
            hooks.current = previous

    @staticmethod
    def _refuse_gradient_checkpointing(anatomy: LMAnatomy) -> None:
        if any(getattr(layer, "gradient_checkpointing", False) and layer.training for layer in anatomy.decoder_layers):
            raise AdapterConfigError(
                "llama_adapter_v2 does not support gradient checkpointing: its hooks read the batch's visual tokens "
                "and gradient routing during the forward, which the backward recompute does not see. Call "
                "`model.gradient_checkpointing_disable()`."
            )

    def _make_linear_hook(self, hooks: _SharedHooks, key: str):
        def linear_hook(module, args, output):
            current = hooks.current
            if current is None:
                return None
            adapter = current.adapter
            bias = adapter._use(adapter.linear_bias[key], "instruction", current)
            scale = adapter._use(adapter.linear_scale[key], "instruction", current)
            return (output + bias.to(output.dtype)) * scale.to(output.dtype)  # y = s * (W x + b)

        return linear_hook

    def _make_norm_hook(self, hooks: _SharedHooks):
        def norm_hook(module, args, kwargs, output):
            current = hooks.current
            if current is None or current.blocked != "instruction" or hooks.recomputing_norm:
                return None
            params = {name: p.detach() for name, p in module.named_parameters(recurse=False) if p.requires_grad}
            if not params:
                return None
            hooks.recomputing_norm = True
            try:  # the same norm with detached weights: its parameters get no gradient from this batch
                return torch.func.functional_call(module, params, args, kwargs)
            finally:
                hooks.recomputing_norm = False

        return norm_hook

    def _make_attention_hook(self, hooks: _SharedHooks, layer_index: int):
        anatomy = hooks.anatomy

        def attention_hook(attn, args, kwargs, output):
            current = hooks.current
            if current is None:
                return None
            branches = current.adapter._branches(layer_index, current)
            if not branches:
                return None
            hidden, position_embeddings = anatomy.hook_inputs(args, kwargs)  # [B, S, D]
            visual = current.visual_tokens
            if visual is not None and visual.shape[0] != hidden.shape[0]:
                raise _one_image_per_row_error(visual.shape[0], hidden.shape[0])
            query = anatomy.query_states(attn, hidden, position_embeddings).float()  # [B, nH, S, hd]
            mixed = None
            for tokens, gate in branches:  # tokens [1 or B, N, D], gate [nH]
                # A fresh copy: a loaded checkpoint can leave parameters at unaligned (mmap) addresses, and a GEMM's
                # last bits may depend on its input's alignment; the copy makes reloaded models compute identically.
                tokens = tokens.to(hidden.dtype, copy=True)
                keys, values = anatomy.prompt_key_values(attn, tokens)  # [1 or B, nH, N, hd]
                scores = (query @ keys.float().transpose(-1, -2)) * anatomy.softmax_scale(attn)  # [B, nH, S, N]
                cap = anatomy.softcap(attn)
                if cap is not None:
                    scores = torch.tanh(scores / cap) * cap
                branch = scores.softmax(-1).to(values.dtype) @ values  # [B, nH, S, hd]
                branch = branch * torch.tanh(gate).to(values.dtype).view(1, -1, 1, 1)
                mixed = branch if mixed is None else mixed + branch
            flat = mixed.transpose(1, 2).flatten(2)  # [B, S, nH*hd]
            update = current.adapter._project_branch(anatomy, attn, flat, hooks, current)  # [B, S, D]
            attn_output = output[0] if isinstance(output, tuple) else output
            attn_output = attn_output + update.to(attn_output.dtype)
            return (attn_output, *output[1:]) if isinstance(output, tuple) else attn_output

        return attention_hook

    # ------------------------------------------------------------------------------------------ per forward

    def _use(self, tensor: torch.Tensor, group: str, current: _Injection) -> torch.Tensor:
        """`tensor`, detached when its group must not learn from this forward."""
        return tensor.detach() if current.blocked == group else tensor

    def _branches(self, layer_index: int, current: _Injection) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """(tokens [1 or B, N, D], gate [nH]) for each gated branch of this layer in this forward."""
        branches = []
        if layer_index in self.early_layers and current.visual_tokens is not None:
            slot = self.early_layers.index(layer_index)
            branches.append(
                (
                    self._use(current.visual_tokens, "vision", current),
                    self._use(self.visual_gates[slot], "vision", current),
                )
            )
        if layer_index in self.prompt_layers:
            slot = self.prompt_layers.index(layer_index)
            branches.append(
                (
                    self._use(self.prompts[slot], "instruction", current)[None],
                    self._use(self.prompt_gates[slot], "instruction", current),
                )
            )
        return branches

    def _project_branch(
        self, anatomy: LMAnatomy, attn: nn.Module, flat: torch.Tensor, hooks: _SharedHooks, current: _Injection
    ) -> torch.Tensor:
        """The gated branch [B, S, nH*hd] through the output projection, as if it were part of the attention."""
        output_module = anatomy.output_projection(attn)
        if hasattr(output_module, "base_layer"):
            # Wrapped (PEFT LoRA): run the wrapper, so its delta (and the bias/scale hook on the base layer) reach the
            # branch too; subtracting its value at zero removes the biases. Exactly zero while the gates are zero.
            return output_module(flat) - output_module(torch.zeros_like(flat))
        update = anatomy.project_output(attn, flat)  # W x, no bias
        key = hooks.linear_keys.get(output_module)
        if key is not None:
            update = update * self._use(self.linear_scale[key], "instruction", current).to(update.dtype)
        return update

    # ------------------------------------------------------------------------------------------ groups

    @contextlib.contextmanager
    def gradient_group(self, group: Optional[str]) -> Iterator[None]:
        """Forwards inside train only `group` ("vision", "instruction"), or every parameter with "all".

        Without it, `disjoint_groups=True` picks the group from the batch: "vision" with images, else
        "instruction".
        """
        if group not in (*GROUPS, "all"):
            raise AdapterConfigError(f"gradient_group must be one of {(*GROUPS, 'all')}, got {group!r}.")
        hooks = self._hooks
        previous, hooks.group_override = hooks.group_override, group
        try:
            yield
        finally:
            hooks.group_override = previous

    @property
    def routes_gradients_by_modality(self) -> bool:
        return self.config.disjoint_groups

    def parameter_groups(self, prefix: str = "adapter.", base_prefix: str = "language_model.") -> Dict[str, List[str]]:
        """Parameter names of each group, as `VisionAdapterForCausalLM.named_parameters()` gives them.

        "vision": the visual projection and norm, the visual queries and the early-layer gates.
        "instruction": the late prompts and gates, the linears' biases and scales, and the LM's norms.
        """
        groups: Dict[str, List[str]] = {"vision": [], "instruction": []}
        for name, _ in self.named_parameters():
            groups[self.group_of(name)].append(prefix + name)
        groups["instruction"] += [base_prefix + name for name in self._norm_parameter_names]
        return groups


    @staticmethod
    def group_of(name: str) -> str:
        """The group of an adapter parameter, by its name relative to the adapter."""
        return "vision" if name.split(".")[0] in VISION_PARAMETERS else "instruction"


def _one_image_per_row_error(num_images: int, batch_size: int) -> ImageTokenMismatchError:
    return ImageTokenMismatchError(
        f"llama_adapter_v2 takes exactly one image per sample, image i for batch row i, but got {num_images} images "
        f"for {batch_size} rows. Split a mixed batch into its image rows and its text-only rows "
        "(hf_vadapter.training.joint_training.split_by_image) and run each as its own forward."
    )
