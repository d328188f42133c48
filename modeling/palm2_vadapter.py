"""PaLM2-VAdapter (arXiv 2402.10896): a progressively aligned tiny causal LM as the vision-language adapter.

One config class, `PaLM2VAdapterConfig`, covers both stages of the paper; its `stage` field picks the module shape.

**Stage 1** (`stage=1`) trains a tiny LM as a caption decoder. The model is an ordinary `VisionAdapterForCausalLM`
whose `language_model` *is* the tiny LM and whose adapter is a CoCa-style attentional pooler (learned queries, one
cross-attention layer over the frozen tower's tokens, a LayerNorm). The adapter declares every LM parameter as
trainable (`trainable_base_parameter_names`), so the tiny LM trains with the pooler and its weights are part of the
adapter-only checkpoint. A stage-1 model captions images like any other model of this library.

**Stage 2** (`stage=2`, the default) is the adapter for a large frozen LM:

    tower features [B, T, L, S, Dv] -> input_projection -> 1-layer perceiver `Resampler` -> [B, Q, H]
        -> tiny_lm_input -> tiny LM (fed `inputs_embeds`, its normed last hidden states) -> [B, Q, Dt]
        -> output_projection -> [B, Q, D] visual tokens at the large LM's `<image>` placeholders.

The resampler, both linears and the tiny LM train; tower and large LM stay frozen. The tiny LM lives inside the
adapter without its token embedding (it only ever receives `inputs_embeds`), and the config carries its config dict
(`tiny_lm_config`), so a saved adapter is rebuilt from its config alone and loads without the tiny LM checkpoint.
`front="self_attention"` replaces the resampler by the tiny LM's own self-attention: projected frame tokens followed
by learned queries go through the tiny LM, and its outputs at the query positions are the visual tokens.

The tiny LM of a new stage-2 adapter starts from `tiny_lm_init`: `"random"` (from `tiny_lm_config`), `"pretrained"`
(an LM checkpoint, `tiny_lm_name_or_path`) or `"stage1"` (the tiny LM of a stage-1 adapter checkpoint). Those weights
are loaded by `VisionAdapterForCausalLM.from_vision_text_pretrained` only; loading a trained adapter never reads them.

Example (the handoff is one call, `PaLM2VAdapterConfig.from_stage1`):

    from hf_vadapter import PaLM2VAdapterConfig, VisionAdapterForCausalLM

    tower = "google/siglip-base-patch16-224"
    stage1 = VisionAdapterForCausalLM.from_vision_text_pretrained(
        tower, "HuggingFaceTB/SmolLM2-135M", PaLM2VAdapterConfig(stage=1)
    )
    ...  # train stage1 on captions (the pooler and the whole tiny LM train)
    stage1.save_adapter("out/stage1")

    config = PaLM2VAdapterConfig.from_stage1("out/stage1")  # tiny LM initialised from the stage-1 checkpoint
    model = VisionAdapterForCausalLM.from_vision_text_pretrained(tower, "Qwen/Qwen2.5-1.5B", config)
    ...  # train the resampler, the linears and the tiny LM; the large LM stays frozen
    model.save_adapter("out/stage2")

Defaults (the paper does not state the visual token count nor the tiny LM's size): 64 visual tokens, a 1-layer
resampler (the paper's choice; Table 4 finds 6 layers much worse) of width 768 with 8 heads and a 4x feed-forward,
a time embedding over 8 frames, images fed as one frame (`repeat_image_frames=8` repeats them as the paper does).
"""

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Optional, Tuple

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig
from transformers.utils import logging

from .adapter_base import AdapterOutput, VisionAdapter
from .adapter_config import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, AdapterConfig
from .errors import AdapterConfigError, InvalidImageError
from .file_resolution import check_tensors, read_json_file, resolve_file
from .perceiver_resampler import Resampler
from .safe_io import load_safetensors
from .vision_features import VisionGeometry

logger = logging.get_logger(__name__)

# What a stage-1 checkpoint is, for the errors when a file is missing.
STAGE1_CHECKPOINT = (
    f"a stage-1 PaLM2-VAdapter checkpoint (the folder `model.save_adapter(folder)` writes: config.json, "
    f"{ADAPTER_CONFIG_NAME} and {ADAPTER_WEIGHTS_NAME})"
)
STAGES = (1, 2)
FRONTS = ("cross_attention", "self_attention")
TINY_LM_INITS = ("random", "pretrained", "stage1")
# Stage-2 fields that say where the tiny LM comes from; a stage-1 config has its tiny LM as the model's LM instead.
_TINY_LM_FIELDS = ("tiny_lm_init", "tiny_lm_name_or_path", "tiny_lm_revision", "tiny_lm_config", "stage1_name_or_path")


@dataclass
class PaLM2VAdapterConfig(AdapterConfig):
    """Config of PaLM2-VAdapter, both stages.

    Args:
        stage: 1 builds the attentional pooler that feeds the model's own LM (the tiny LM, which then trains);
            2 (default) builds the resampler -> tiny LM -> linear adapter for a frozen large LM.
        num_visual_tokens: visual tokens per sample: the pooler's queries (stage 1), the resampler's latents or the
            learned queries of the self-attention front (stage 2). Default 64 (not stated in the paper; its
            perceiver baseline uses 256).
        num_heads: attention heads of the pooler (stage 1; it works at the tiny LM's width) and of the resampler.
        max_frames: frames the learned time embedding covers (8, as the paper's videos). An image is one frame.
        repeat_image_frames: repeat a single image to this many frames, as the paper does with 8; 1 (default) keeps
            one frame.
        front: stage 2 only. `"cross_attention"` (default): a perceiver resampler before the tiny LM.
            `"self_attention"`: no resampler; the projected frame tokens and `num_visual_tokens` learned queries go
            through the tiny LM itself and its outputs at the query positions are kept.
        resampler_depth: resampler layers (default 1, the paper's choice).
        resampler_hidden_size: width of the resampler (default 768, the paper's); linears match it to the tiny LM.
        ffn_mult: the resampler's feed-forward width as a multiple of its width (default 4).
        tiny_lm_init: how a new stage-2 adapter initialises its tiny LM: `"random"`, `"pretrained"` (from
            `tiny_lm_name_or_path`) or `"stage1"` (from the stage-1 adapter checkpoint `stage1_name_or_path`).
            Default: `"stage1"` when `stage1_name_or_path` is given, else `"pretrained"`.
        tiny_lm_name_or_path / tiny_lm_revision: the tiny LM checkpoint (a Hub id or folder of any causal LM).
        tiny_lm_config: the tiny LM's config as a dict (with `model_type`). Filled from `tiny_lm_name_or_path` when
            left out, and saved with the adapter so that it is rebuilt without the tiny LM checkpoint.
        stage1_name_or_path / stage1_revision: the stage-1 adapter checkpoint (see `from_stage1`).
    """

    adapter_type: ClassVar[str] = "palm2_vadapter"
    supports_stage_handoff: ClassVar[bool] = True

    stage: int = 2
    num_visual_tokens: int = 64
    num_heads: int = 8
    max_frames: int = 8
    repeat_image_frames: int = 1
    front: str = "cross_attention"
    resampler_depth: int = 1
    resampler_hidden_size: int = 768
    ffn_mult: int = 4
    tiny_lm_init: Optional[str] = None
    tiny_lm_name_or_path: Optional[str] = None
    tiny_lm_revision: Optional[str] = None
    tiny_lm_config: Optional[Dict[str, Any]] = None
    stage1_name_or_path: Optional[str] = None
    stage1_revision: Optional[str] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stage not in STAGES:
            raise AdapterConfigError(f"PaLM2VAdapterConfig.stage must be 1 or 2, got {self.stage!r}.")
        if self.num_visual_tokens < 1:
            raise AdapterConfigError(f"num_visual_tokens must be >= 1, got {self.num_visual_tokens}.")
        if not 1 <= self.repeat_image_frames <= self.max_frames:
            raise AdapterConfigError(
                f"repeat_image_frames={self.repeat_image_frames} must be between 1 and max_frames={self.max_frames}."
            )
        if self.stage == 1:
            given = [name for name in _TINY_LM_FIELDS if getattr(self, name) is not None]
            if given:
                raise AdapterConfigError(
                    f"A stage-1 PaLM2VAdapterConfig got {given}, but in stage 1 the tiny LM is the model's own LM: "
                    "pass it as the text model of `VisionAdapterForCausalLM.from_vision_text_pretrained`."
                )
            return
        if self.front not in FRONTS:
            raise AdapterConfigError(f"front={self.front!r} is not one of {FRONTS}.")
        if self.front == "cross_attention":
            if self.resampler_depth < 1:
                raise AdapterConfigError(f"resampler_depth must be >= 1, got {self.resampler_depth}.")
            if self.resampler_hidden_size % self.num_heads:
                raise AdapterConfigError(
                    f"resampler_hidden_size={self.resampler_hidden_size} must be divisible by num_heads={self.num_heads}."
                )
        if self.tiny_lm_init is None:
            self.tiny_lm_init = "stage1" if self.stage1_name_or_path else "pretrained"
        if self.tiny_lm_init not in TINY_LM_INITS:
            raise AdapterConfigError(f"tiny_lm_init={self.tiny_lm_init!r} is not one of {TINY_LM_INITS}.")
        if self.tiny_lm_init == "pretrained" and not self.tiny_lm_name_or_path:
            raise AdapterConfigError(
                "A stage-2 PaLM2VAdapterConfig needs its tiny LM: pass tiny_lm_name_or_path (a causal LM checkpoint), "
                "build it from a stage-1 checkpoint with PaLM2VAdapterConfig.from_stage1(folder), or use "
                "tiny_lm_init='random' with tiny_lm_config."
            )
        if self.tiny_lm_init == "stage1" and not self.stage1_name_or_path:
            raise AdapterConfigError(
                "tiny_lm_init='stage1' needs stage1_name_or_path; PaLM2VAdapterConfig.from_stage1(folder) fills it."
            )
        if self.tiny_lm_config is None:
            if not self.tiny_lm_name_or_path:
                raise AdapterConfigError("tiny_lm_init='random' needs tiny_lm_config (or tiny_lm_name_or_path).")
            # Read once from the checkpoint; from then on the dict travels with the config.
            config = AutoConfig.from_pretrained(self.tiny_lm_name_or_path, revision=self.tiny_lm_revision)
            self.tiny_lm_config = config.to_dict()
        elif isinstance(self.tiny_lm_config, PretrainedConfig):
            self.tiny_lm_config = self.tiny_lm_config.to_dict()
        if "model_type" not in self.tiny_lm_config:
            raise AdapterConfigError("tiny_lm_config needs a 'model_type' entry naming the tiny LM's architecture.")

    @classmethod
    def from_stage1(
        cls, stage1_name_or_path, *, revision: Optional[str] = None, **overrides
    ) -> "PaLM2VAdapterConfig":
        """The stage-2 config whose tiny LM starts from a stage-1 adapter checkpoint (folder or Hub repo).

        The tiny LM's config, its original checkpoint id, the tower features read (`feature_layers`,
        `feature_select`, `feature_norm`), `num_visual_tokens`, `num_heads`, `max_frames` and
        `repeat_image_frames` are taken from the stage-1 checkpoint; `overrides` set any field.
        """
        saved = read_json_file(stage1_name_or_path, "config.json", revision, what=STAGE1_CHECKPOINT)
        adapter = saved.get("adapter_config") or {}
        if adapter.get("adapter_type") != cls.adapter_type or adapter.get("stage") != 1:
            raise AdapterConfigError(
                f"{stage1_name_or_path} is not a stage-1 PaLM2-VAdapter checkpoint (its adapter is "
                f"{adapter.get('adapter_type')!r}, stage {adapter.get('stage')!r}). Train a model with "
                "PaLM2VAdapterConfig(stage=1) and save it with `model.save_adapter(folder)` first."
            )
        inherited = {
            name: adapter[name]
            for name in (
                "feature_layers", "feature_select", "feature_norm", "num_visual_tokens", "num_heads", "max_frames",
                "repeat_image_frames",
            )
            if name in adapter
        }
        values = dict(
            inherited,
            stage=2,
            tiny_lm_init="stage1",
            tiny_lm_config=saved["text_config"],
            tiny_lm_name_or_path=saved.get("text_model_name_or_path"),
            tiny_lm_revision=saved.get("text_revision"),
            stage1_name_or_path=str(stage1_name_or_path),
            stage1_revision=revision,
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_previous_stage(cls, checkpoint, **overrides) -> "PaLM2VAdapterConfig":
        """The capability name of `from_stage1` (see `AdapterConfig.from_previous_stage`)."""
        overrides.pop("stage1_name_or_path", None)
        return cls.from_stage1(checkpoint, **overrides)


class AttentionalPooler(nn.Module):
    """CoCa-style pooler: learned queries cross-attend once to the normed frame tokens, then a LayerNorm.

    frame tokens [B, T, S, C] (plus a learned time embedding per frame) -> [B, Q, D].
    """

    def __init__(self, input_size: int, hidden_size: int, num_heads: int, num_queries: int, max_frames: int):
        super().__init__()
        self.num_heads = num_heads
        self.max_frames = max_frames
        self.queries = nn.Parameter(torch.randn(num_queries, hidden_size) * 0.02)
        self.time_embedding = nn.Parameter(torch.zeros(max_frames, input_size))
        self.norm_inputs = nn.LayerNorm(input_size)
        self.to_q = nn.Linear(hidden_size, hidden_size)
        self.to_kv = nn.Linear(input_size, 2 * hidden_size)
        self.to_out = nn.Linear(hidden_size, hidden_size)
        self.norm_out = nn.LayerNorm(hidden_size)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # [B, H, N, hd]

    def forward(self, frame_tokens: torch.Tensor) -> torch.Tensor:
        b, t = frame_tokens.shape[:2]
        _check_frames(t, self.max_frames)
        inputs = self.norm_inputs((frame_tokens + self.time_embedding[:t, None]).flatten(1, 2))  # [B, T*S, C]
        q = self._heads(self.to_q(self.queries).expand(b, -1, -1))  # [B, H, Q, hd]
        k, v = (self._heads(x) for x in self.to_kv(inputs).chunk(2, dim=-1))  # [B, H, T*S, hd]
        attended = nn.functional.scaled_dot_product_attention(q, k, v)  # [B, H, Q, hd]
        return self.norm_out(self.to_out(attended.transpose(1, 2).flatten(2)))  # [B, Q, D]


class PaLM2VAdapter(VisionAdapter):
    """PaLM2-VAdapter: image features [B, T, L, S, Dv] -> visual tokens [B, num_visual_tokens, D].

    Stage 1 holds `pooler` (its LM is the model's `language_model`, trained alongside). Stage 2 holds
    `input_projection`, `resampler` (cross-attention front) or `queries` + `time_embedding` (self-attention front),
    `tiny_lm_input` (cross-attention front), `tiny_lm` and `output_projection`.
    """

    def __init__(self, config: PaLM2VAdapterConfig, geometry: VisionGeometry, text_config):
        super().__init__()
        self.config = config
        self.geometry = geometry
        self._trainable_lm_names: Tuple[str, ...] = ()
        in_features = geometry.hidden_size * len(config.feature_layers)
        if config.stage == 1:
            if text_config.hidden_size % config.num_heads:
                raise AdapterConfigError(
                    f"The stage-1 pooler works at the tiny LM's width {text_config.hidden_size}, which num_heads="
                    f"{config.num_heads} does not divide; pick num_heads among its divisors."
                )
            self.pooler = AttentionalPooler(
                in_features, text_config.hidden_size, config.num_heads, config.num_visual_tokens, config.max_frames
            )
            return
        self.tiny_lm, tiny_width = build_tiny_lm(config.tiny_lm_config)
        if config.front == "cross_attention":
            width = config.resampler_hidden_size
            self.input_projection = nn.Linear(in_features, width)
            self.resampler = Resampler(
                width, config.resampler_depth, config.num_heads, config.ffn_mult, config.num_visual_tokens,
                config.max_frames,
            )
            self.tiny_lm_input = nn.Linear(width, tiny_width)
        else:
            self.input_projection = nn.Linear(in_features, tiny_width)
            self.time_embedding = nn.Parameter(torch.zeros(config.max_frames, tiny_width))
            self.queries = nn.Parameter(torch.randn(config.num_visual_tokens, tiny_width) * 0.02)
        self.output_projection = nn.Linear(tiny_width, text_config.hidden_size)

    @property
    def num_image_tokens(self) -> int:
        return self.config.num_visual_tokens

    # ------------------------------------------------------------------------------------------ stage 1

    def attach(self, language_model: nn.Module) -> None:
        if self.config.stage == 1:
            # The model's LM is the tiny LM: all of it trains and is saved with the adapter.
            self._trainable_lm_names = tuple(name for name, _ in language_model.named_parameters())

    def trainable_base_parameter_names(self) -> Tuple[str, ...]:
        return self._trainable_lm_names

    # ------------------------------------------------------------------------------------------ forward

    def forward(self, image_features: torch.Tensor) -> AdapterOutput:
        """Image features [B, T, L, S, Dv] -> visual tokens [B, Q, D] (stage 1: [B, Q, D_tiny] for the tiny LM)."""
        if image_features.shape[1] == 1 and self.config.repeat_image_frames > 1:
            image_features = image_features.expand(-1, self.config.repeat_image_frames, -1, -1, -1)
        frame_tokens = image_features.permute(0, 1, 3, 2, 4).flatten(3)  # [B, T, S, L*Dv]
        if self.config.stage == 1:
            return AdapterOutput(tokens=self.pooler(frame_tokens))  # [B, Q, D_tiny]: the prefix of the tiny LM itself
        if self.config.front == "cross_attention":
            latents = self.resampler(self.input_projection(frame_tokens))  # [B, Q, H]
            hidden = self._run_tiny_lm(self.tiny_lm_input(latents))  # [B, Q, Dt]
        else:
            b, t = frame_tokens.shape[:2]
            _check_frames(t, self.config.max_frames)
            tokens = (self.input_projection(frame_tokens) + self.time_embedding[:t, None]).flatten(1, 2)  # [B, T*S, Dt]
            queries = self.queries.expand(b, -1, -1)  # [B, Q, Dt]
            hidden = self._run_tiny_lm(torch.cat([tokens, queries], dim=1))[:, -self.config.num_visual_tokens :]
        return AdapterOutput(tokens=self.output_projection(hidden))  # [B, Q, D]

    def _run_tiny_lm(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """The tiny LM's last hidden states, after its final norm: [B, N, Dt]."""
        return self.tiny_lm(inputs_embeds=inputs_embeds, use_cache=False).last_hidden_state

    # ------------------------------------------------------------------------------------------ initial weights

    def load_initial_weights(self, **hub_kwargs) -> None:
        """Load the tiny LM weights a new stage-2 adapter starts from (`tiny_lm_init`)."""
        if self.config.stage == 1 or self.config.tiny_lm_init == "random":
            return
        if self.config.tiny_lm_init == "pretrained":
            source = f"the tiny LM checkpoint {self.config.tiny_lm_name_or_path}"
            pretrained = AutoModel.from_pretrained(
                self.config.tiny_lm_name_or_path, revision=self.config.tiny_lm_revision, **hub_kwargs
            )
            state = pretrained.state_dict()
        else:
            source = f"the stage-1 checkpoint {self.config.stage1_name_or_path}"
            state = self._stage1_tiny_lm_state(hub_kwargs)
        self._load_tiny_lm_state(state, source)

    def _stage1_tiny_lm_state(self, hub_kwargs: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        name, revision = self.config.stage1_name_or_path, self.config.stage1_revision
        saved = read_json_file(name, "config.json", revision, hub_kwargs, what=STAGE1_CHECKPOINT)
        vision = saved.get("vision_config") or {}
        if (vision.get("hidden_size"), vision.get("num_hidden_layers")) != (
            self.geometry.hidden_size,
            self.geometry.num_layers,
        ):
            logger.warning(
                f"The stage-1 checkpoint {name} was trained on another vision tower (hidden size "
                f"{vision.get('hidden_size')}, {vision.get('num_hidden_layers')} layers) than this one; the paper "
                "keeps the same tower in both stages."
            )
        weights = load_safetensors(resolve_file(name, ADAPTER_WEIGHTS_NAME, revision, hub_kwargs, what=STAGE1_CHECKPOINT))
        prefix = f"language_model.{self.tiny_lm.base_model_prefix}."
        return {key[len(prefix) :]: tensor for key, tensor in weights.items() if key.startswith(prefix)}

    def _load_tiny_lm_state(self, state: Dict[str, torch.Tensor], source: str) -> None:
        expected = dict(self.tiny_lm.named_parameters())
        hint = f"Is it a checkpoint of a {self.config.tiny_lm_config['model_type']} LM with the config in tiny_lm_config?"
        check_tensors(state, expected, f"The tiny-LM weights of {source}", hint, allow_unexpected=True)
        with torch.no_grad():
            for key, parameter in expected.items():
                parameter.copy_(state[key])


def build_tiny_lm(tiny_lm_config: Dict[str, Any]) -> Tuple[nn.Module, int]:
    """The tiny LM's base model (no LM head) from its config dict, without its token embedding, and its width.

    The adapter feeds it `inputs_embeds` only, so the embedding would be dead weight in the trainable set and the
    checkpoint. The width returned is the embedding's (OPT-style LMs embed at another width than they compute in).
    """
    values = dict(tiny_lm_config)
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    model = AutoModel.from_config(config, dtype=torch.get_default_dtype())
    embedding = model.get_input_embeddings()
    width = embedding.embedding_dim
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child is embedding:
                setattr(module, child_name, None)
    return model, width


def _check_frames(num_frames: int, max_frames: int) -> None:
    if num_frames > max_frames:
        raise InvalidImageError(
            f"Got {num_frames} frames, but the time embedding covers {max_frames}; raise max_frames in the config."
        )
