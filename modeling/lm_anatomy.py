"""LM anatomy: where a frozen causal LM keeps its decoder layers and attention, and how its attention builds a query.

In-layer adapters (eP-ALM, LLaMA-Adapter V2) reach inside the decoder layers of a frozen ``*ForCausalLM`` through
forward (pre-)hooks. This module is the one place that knows, per ``config.model_type``, where the layers and the
attention projections are, in which order projection, q/k norm, reshape and rotary happen, and which scale the
attention kernel uses. The per-family differences are one small table (``_FAMILIES``); the code around it is
family-agnostic, and it calls the LM's own modules (projections, norms, the module's own ``apply_rotary_pos_emb``),
so what it recomputes equals what the layer computes, bit for bit.

API
---
``get_lm_anatomy(lm) -> LMAnatomy``
    ``lm`` is the ``*ForCausalLM`` (``GPT2LMHeadModel`` for gpt2, ``Gemma3ForCausalLM`` for ``gemma3_text``).
    Raises ``UnsupportedArchitectureError``, naming ``SUPPORTED_MODEL_TYPES``, for any other ``model_type`` or
    when the model does not have the expected layout (for example a bare ``LlamaModel``).

``LMAnatomy`` attributes
    ``lm``, ``model_type``, ``decoder_layers`` (the ``nn.ModuleList``), ``hidden_size``, ``num_heads`` (nH),
    ``num_kv_heads``, ``head_dim`` (hd).

``LMAnatomy`` methods (``attn`` is an attention module of this LM, as ``attention(i)`` returns it)
    - ``attention(layer_index) -> nn.Module``
    - ``query_states(attn, hidden_states, position_embeddings=None) -> Tensor``  ``[B, nH, S, hd]``, exactly the
      query the attention kernel receives (projection, OPT's pre-scaling, q_norm, rotary when
      ``position_embeddings`` is given and the layer uses rope).
    - ``prompt_key_values(attn, prompt_hidden) -> (k, v)``  from ``[B, P, hidden]`` to ``[B, nH, P, hd]`` each:
      the layer's own key/value projections (and k_norm), no rotary, repeated from nKV to nH heads.
    - ``softmax_scale(attn) -> float``  the ``scaling`` the kernel applies to ``q @ k^T`` (1.0 for OPT, whose
      query is pre-scaled; gpt2's ``scale_attn_by_inverse_layer_idx`` is already inside ``attn.scaling``).
    - ``softcap(attn) -> float | None``  the logit soft-capping the kernel applies (gemma2 only; gemma3 stores a
      value but never passes it to the kernel).
    - ``output_projection(attn) -> nn.Module``  the output projection module itself.
    - ``project_output(attn, x) -> Tensor``  ``[B, S, nH*hd] -> [B, S, hidden]`` through the output projection's
      weight only, without its bias.
    - ``hook_inputs(args, kwargs) -> (hidden_states, position_embeddings | None)``  for an attention forward
      (pre-)hook registered with ``with_kwargs=True``.
    - ``layer_hidden_states(args, kwargs) -> Tensor`` and
      ``replace_layer_hidden_states(args, kwargs, hidden_states) -> (args, kwargs)``  for a decoder-layer forward
      pre-hook registered with ``with_kwargs=True`` (gpt2's block takes its other inputs positionally too; they are
      kept as they are).
    - ``linear_layers() -> list[(name, module)]``  every ``nn.Linear`` / ``Conv1D`` inside the decoder layers, the
      targets of LLaMA-Adapter V2's bias/scale tuning. ``lm_head`` is NOT included (it is usually tied to the
      input embeddings, and the paper's tuned linears are the transformer blocks'); embeddings are lookups, not
      linears. Names are ``lm.named_modules()`` names.
    - ``norm_layers() -> list[(name, module)]``  every norm of the whole LM (classes whose name ends in ``"Norm"``,
      ``nn.LayerNorm``, ``nn.RMSNorm``): the per-layer norms, the final norm, and the per-head q/k norms of
      qwen3 / gemma3 / olmo2.

Recipe: LLaMA-Adapter zero-init gated prompt attention (a forward hook on ``attention(i)``)
--------------------------------------------------------------------------------------------
::

    anatomy = get_lm_anatomy(lm)

    def hook(attn, args, kwargs, output):
        hidden, pos = anatomy.hook_inputs(args, kwargs)                  # [B, S, hidden]
        q = anatomy.query_states(attn, hidden, pos)                      # [B, nH, S, hd]
        k, v = anatomy.prompt_key_values(attn, prompt[None])             # prompt [P, hidden] -> [1, nH, P, hd] each
        scores = (q.float() @ k.float().transpose(-1, -2)) * anatomy.softmax_scale(attn)  # [B, nH, S, P]
        if (cap := anatomy.softcap(attn)) is not None:
            scores = torch.tanh(scores / cap) * cap
        x = scores.softmax(-1).to(v.dtype) @ v                           # [B, nH, S, hd]
        x = x * torch.tanh(gate).view(1, -1, 1, 1)                       # gate: [nH], zero-init
        x = x.transpose(1, 2).flatten(2)                                 # [B, S, nH*hd]
        return (output[0] + anatomy.project_output(attn, x), *output[1:])

    handle = anatomy.attention(i).register_forward_hook(hook, with_kwargs=True)

The prompt attention is a separate softmax (no mask: every position sees every prompt), so with the gate at 0 the
model is exactly the frozen LM, and the KV cache is untouched (cached generation equals uncached).

Recipe: eP-ALM slot overwrite at layers >= L (a forward pre-hook on each ``decoder_layers[l]``)
---------------------------------------------------------------------------------------------
::

    def pre_hook(layer, args, kwargs):
        hidden = anatomy.layer_hidden_states(args, kwargs)               # [B, S, hidden]
        if hidden.shape[1] == 1:                                         # cached decode step: slot already cached
            return None
        hidden = hidden.clone()
        hidden[:, slot] = token                                          # token: [B, hidden]
        return anatomy.replace_layer_hidden_states(args, kwargs, hidden)

    for layer in anatomy.decoder_layers[L:]:
        layer.register_forward_pre_hook(pre_hook, with_kwargs=True)

Find ``slot`` by sequence index or a token mask, never by ``position_ids`` (with left padding ``generate`` passes
``position_ids = cumsum(mask) - 1``), and edit only at prefill.

Bias/scale tuning
-----------------
``query_states`` and ``prompt_key_values`` call the projection modules, so hooks on them (``y = s * (W x + b)``)
are seen. ``project_output`` uses ``weight`` only, so keep the module types and their ``weight`` (hooks or extra
parameters rather than replacing the modules by wrappers).
"""

import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from .errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class _FamilySpec:
    """What differs between LM families, as data. The defaults are the Llama layout."""

    layers: str = "model.layers"  # dotted path from the *ForCausalLM to the decoder-layer ModuleList
    attention: str = "self_attn"  # attribute of a decoder layer holding its self-attention
    fused_qkv: str | None = None  # one projection whose output is [q | k | v] (phi3 qkv_proj, gpt2 c_attn)
    output: str = "o_proj"  # the attention's output projection
    qk_norm: str | None = None  # where q_norm/k_norm act: "flat" (before the head split), "heads", "heads_transposed"
    prescaled_query: bool = False  # q is multiplied by `scaling` before the kernel, which then gets 1.0 (OPT)
    softcap: bool = False  # the kernel receives `attn_logit_softcapping` (gemma2)


_FAMILIES: dict[str, _FamilySpec] = {
    "llama": _FamilySpec(),
    "mistral": _FamilySpec(),
    "qwen2": _FamilySpec(),
    "qwen3": _FamilySpec(qk_norm="heads"),
    "gemma": _FamilySpec(),
    "gemma2": _FamilySpec(softcap=True),
    "gemma3_text": _FamilySpec(qk_norm="heads_transposed"),
    "phi3": _FamilySpec(fused_qkv="qkv_proj"),
    "opt": _FamilySpec(layers="model.decoder.layers", output="out_proj", prescaled_query=True),
    "gpt2": _FamilySpec(layers="transformer.h", attention="attn", fused_qkv="c_attn", output="c_proj"),
    "smollm3": _FamilySpec(),
    "olmo2": _FamilySpec(qk_norm="flat"),
}

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(_FAMILIES))


def get_lm_anatomy(lm: PreTrainedModel) -> "LMAnatomy":
    """Return the anatomy of a ``*ForCausalLM``, resolved by ``lm.config.model_type``."""
    model_type = getattr(lm.config, "model_type", None)
    spec = _FAMILIES.get(model_type)
    if spec is None:
        raise UnsupportedArchitectureError(
            f"In-layer adapters do not support {type(lm).__name__} (model_type {model_type!r}). "
            f"Supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}."
        )
    try:
        decoder_layers = lm.get_submodule(spec.layers)
    except AttributeError as error:
        raise UnsupportedArchitectureError(
            f"Expected a {model_type} causal LM with its decoder layers at `{spec.layers}`, got {type(lm).__name__}."
        ) from error
    return LMAnatomy(lm, spec, decoder_layers)


class LMAnatomy:
    """Per-family access to the decoder layers and attention internals of one causal LM (see the module docstring)."""

    def __init__(self, lm: PreTrainedModel, spec: _FamilySpec, decoder_layers: nn.ModuleList):
        self.lm = lm
        self.model_type: str = lm.config.model_type
        self.decoder_layers = decoder_layers
        self._spec = spec
        self.hidden_size: int = lm.config.hidden_size
        self.num_heads: int = lm.config.num_attention_heads
        self.num_kv_heads: int = getattr(lm.config, "num_key_value_heads", None) or self.num_heads
        self.head_dim: int = self.attention(0).head_dim

    def attention(self, layer_index: int) -> nn.Module:
        """The self-attention module of decoder layer ``layer_index``."""
        return getattr(self.decoder_layers[layer_index], self._spec.attention)

    # --- the attention's own computations -------------------------------------------------------------------

    def query_states(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The query ``[B, nH, S, hd]`` exactly as the kernel receives it, from the attention input ``[B, S, H]``."""
        flat = self._project(attn, hidden_states, "q")  # [B, S, nH*hd]
        if self._spec.prescaled_query:
            flat = flat * attn.scaling
        query = self._split_heads(attn, flat, "q_norm")  # [B, nH, S, hd]
        if position_embeddings is not None and getattr(attn, "use_rope", True):
            cos, sin = position_embeddings
            apply_rotary_pos_emb = sys.modules[type(attn).__module__].apply_rotary_pos_emb
            query, _ = apply_rotary_pos_emb(query, query, cos, sin)
        return query

    def prompt_key_values(self, attn: nn.Module, prompt_hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``[B, nH, P, hd]`` of prompt tokens ``[B, P, hidden]``: the layer's own projections and
        k_norm, no rotary, each kv head repeated for its group of query heads.

        For a prompt shared by the whole batch pass ``[1, P, hidden]``: the result broadcasts against the query.
        """
        prompt_hidden = prompt_hidden.contiguous()  # gpt2's Conv1D cannot take an expanded (stride 0) input
        keys = self._split_heads(attn, self._project(attn, prompt_hidden, "k"), "k_norm")  # [B, nKV, P, hd]
        values = self._split_heads(attn, self._project(attn, prompt_hidden, "v"), None)  # [B, nKV, P, hd]
        repeats = self.num_heads // self.num_kv_heads
        return keys.repeat_interleave(repeats, dim=1), values.repeat_interleave(repeats, dim=1)

    def softmax_scale(self, attn: nn.Module) -> float:
        """The factor the kernel multiplies ``q @ k^T`` by."""
        return 1.0 if self._spec.prescaled_query else attn.scaling

    def softcap(self, attn: nn.Module) -> float | None:
        """The kernel's logit soft-capping ``tanh(s / cap) * cap``, or None."""
        return attn.attn_logit_softcapping if self._spec.softcap else None

    def output_projection(self, attn: nn.Module) -> nn.Module:
        """The attention's output projection module (``o_proj``, ``out_proj``, ``c_proj``)."""
        return getattr(attn, self._spec.output)

    def project_output(self, attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``[B, S, nH*hd] -> [B, S, hidden]`` through the output projection's weight, without its bias; a
        PEFT-wrapped projection adds its LoRA update."""
        projection = self.output_projection(attn)
        # A PEFT wrapper (LoRA) keeps the original module as its base layer: read the layout from the base.
        base = projection.get_base_layer() if hasattr(projection, "get_base_layer") else projection
        projected = x @ base.weight if isinstance(base, Conv1D) else F.linear(x, base.weight)  # Conv1D: [in, out]
        if base is not projection:  # add the wrapper's low-rank update (zero while its adapters are disabled)
            projected = projected + (projection(x) - base(x))
        return projected

    def _project(self, attn: nn.Module, hidden_states: torch.Tensor, which: str) -> torch.Tensor:
        """The flat q, k or v projection ``[B, S, n*hd]``, through the attention's own module(s)."""
        if self._spec.fused_qkv is None:
            return getattr(attn, f"{which}_proj")(hidden_states)
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        qkv = getattr(attn, self._spec.fused_qkv)(hidden_states)  # [B, S, q_size + 2 * kv_size]
        return qkv.split([q_size, kv_size, kv_size], dim=-1)["qkv".index(which)]

    def _split_heads(self, attn: nn.Module, flat: torch.Tensor, norm_name: str | None) -> torch.Tensor:
        """``[B, S, n*hd] -> [B, n, S, hd]``, applying the family's q/k norm at the point where the layer does."""
        where = self._spec.qk_norm if norm_name else None
        norm = getattr(attn, norm_name) if where else None
        if where == "flat":
            flat = norm(flat)
        heads = flat.view(*flat.shape[:-1], -1, self.head_dim)  # [B, S, n, hd]
        if where == "heads":
            heads = norm(heads)
        heads = heads.transpose(1, 2)  # [B, n, S, hd]
        if where == "heads_transposed":
            heads = norm(heads)
        return heads

    # --- hook plumbing --------------------------------------------------------------------------------------

    @staticmethod
    def hook_inputs(
        args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """``(hidden_states [B, S, hidden], position_embeddings or None)`` from an attention hook's inputs."""
        hidden_states = args[0] if args else kwargs["hidden_states"]
        return hidden_states, kwargs.get("position_embeddings")

    @staticmethod
    def layer_hidden_states(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
        """The hidden states ``[B, S, hidden]`` entering a decoder layer, from its forward pre-hook's inputs."""
        return args[0] if args else kwargs["hidden_states"]

    @staticmethod
    def replace_layer_hidden_states(
        args: tuple[Any, ...], kwargs: dict[str, Any], hidden_states: torch.Tensor
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The ``(args, kwargs)`` a decoder-layer forward pre-hook returns to feed ``hidden_states`` instead."""
        if args:
            return (hidden_states, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden_states}

    # --- parameter groups for bias/scale tuning -------------------------------------------------------------

    def linear_layers(self) -> list[tuple[str, nn.Module]]:
        """Every ``nn.Linear`` and ``Conv1D`` inside the decoder layers (not ``lm_head``), with its full name."""
        prefix = self._spec.layers + "."
        return [
            (name, module)
            for name, module in self.lm.named_modules()
            if name.startswith(prefix) and isinstance(module, (nn.Linear, Conv1D))
        ]

    def norm_layers(self) -> list[tuple[str, nn.Module]]:
        """Every norm layer of the LM, the final norm and q/k norms included, with its full name."""
        return [
            (name, module)
            for name, module in self.lm.named_modules()
            if type(module).__name__.endswith("Norm") or isinstance(module, (nn.LayerNorm, nn.RMSNorm))
        ]
