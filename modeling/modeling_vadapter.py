"""`VisionAdapterForCausalLM`: a frozen vision tower and a frozen causal LM joined by a small trainable adapter.

Reading order: the output dataclass, the shared base class, then the model: construction from two checkpoints,
image features, the forward pass (placeholders -> visual tokens, loss at supervised positions only), generation,
and adapter-only save/load.
"""

import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    GenerationConfig,
    GenerationMixin,
    PreTrainedModel,
)
from transformers.dynamic_module_utils import custom_object_save
from transformers.modeling_outputs import BaseModelOutputWithPooling, CausalLMOutputWithPast
from transformers.utils import GENERATION_CONFIG_NAME, logging

from .adapter_base import AdapterOutput
from .adapter_config import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, AdapterConfig, config_differences
from .adapters import adapter_config_from_dict, build_adapter, loading_code_from
from .configuration_vadapter import IGNORE_INDEX, VisionAdapterConfig
from .errors import (
    AdapterConfigError,
    BackboneMismatchError,
    CheckpointError,
    ImageTokenMismatchError,
    InvalidImageError,
    InvalidInputError,
    InvalidPromptError,
)
from .finiteness import check_finite_weights
from .mlp_projector import MLPProjectorConfig
from .base_preprocessors import image_size_of, placeholder_token_id
from .checkpoint_files import checkpoint_writer, verify_checkpoint, warn_on_code_skew
from .file_resolution import HUB_KWARG_NAMES, check_tensors, has_checkpoint_file, hub_only, read_json_file, resolve_file
from .safe_io import load_safetensors, save_safetensors
from .vision_features import VisionGeometry, check_image_features, check_pixel_values, select_features

logger = logging.get_logger(__name__)

FULL_WEIGHTS_NAMES = ("model.safetensors", "model.safetensors.index.json")
# Pickle weights, never loaded (unpickling runs arbitrary code): a folder holding only these gets a clear refusal.
PICKLE_WEIGHTS_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
# The Auto classes a saved folder maps to this model's code.
AUTO_MAP_MODEL_CLASSES = ("AutoModel", "AutoModelForCausalLM", "AutoModelForImageTextToText")
# Options of `PreTrainedModel.save_pretrained` that only a full save uses; an adapter-only save accepts and skips them.
FULL_SAVE_OPTIONS = ("max_shard_size", "safe_serialization", "variant", "token", "save_peft_format", "save_original_format")
# Loading options of an adapter-only checkpoint that both bases get (dtype aside, which also sets the adapter's).
BASE_LOAD_KWARG_NAMES = ("device_map", "attn_implementation", "low_cpu_mem_usage", "max_memory")
# Keywords transformers' Auto classes and pipelines add on their own; nothing to do with them here.
PASSED_BY_TRANSFORMERS = ("trust_remote_code", "adapter_kwargs", "_from_auto", "_from_pipeline", "_commit_hash",
                          "code_revision")
ATTENTION_PARTS = ("vision_config", "text_config")
# The other loading options of an adapter-only checkpoint: `dtype` (bases and adapter), and the adapter repo's own
# `revision` and `subfolder` (never the bases').
OTHER_LOAD_KWARG_NAMES = ("dtype", "revision", "subfolder")
# Config attributes every PretrainedConfig has: an override of one reaches the bases' configs too.
GENERIC_CONFIG_ATTRIBUTES = ("output_hidden_states", "output_attentions", "return_dict")
# What builds the model: not a keyword to override at load time.
REQUIRED_CONFIG_STRUCTURE = ("vision_config", "text_config", "adapter_config", "model_type", "architectures",
                             "auto_map", "num_image_tokens")


@dataclass
class VisionAdapterOutputWithPast(CausalLMOutputWithPast):
    """`CausalLMOutputWithPast` plus the in-layer adapter context that decode steps reuse.

    `logits` is [B, S, V]; with labels and `supervised_logits_only`, only the supervised positions, [N, V].
    """

    adapter_context: Optional[Any] = None


class VisionAdapterPreTrainedModel(PreTrainedModel):
    config: VisionAdapterConfig
    config_class = VisionAdapterConfig
    base_model_prefix = ""
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["cache", "past_key_values"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # Forward hooks and Python control flow in the adapters: not traced as one graph.
    _can_compile_fullgraph = False

    def _init_weights(self, module: nn.Module) -> None:
        # The bases arrive initialised (or loaded); adapter modules initialise themselves in their constructors
        # (zero-init gates stay exactly zero), so there is nothing left to do here.
        return


class VisionAdapterForCausalLM(VisionAdapterPreTrainedModel, GenerationMixin):
    """A frozen `vision_tower`, a trainable `adapter` and a frozen `language_model` (any `*ForCausalLM`).

    Build one from two checkpoints with `from_vision_text_pretrained`, train the adapter, save it alone with
    `save_adapter`, and load it back with `from_adapter_pretrained` or `AutoModelForCausalLM.from_pretrained(...,
    trust_remote_code=True)`.
    """

    _auto_class = "AutoModelForCausalLM"

    def __init__(
        self,
        config: VisionAdapterConfig,
        vision_tower: Optional[PreTrainedModel] = None,
        language_model: Optional[PreTrainedModel] = None,
    ):
        super().__init__(config)
        self.vision_tower = vision_tower if vision_tower is not None else AutoModel.from_config(config.vision_config)
        self.language_model = (
            language_model if language_model is not None else AutoModelForCausalLM.from_config(config.text_config)
        )
        self.geometry = VisionGeometry.from_config(config.vision_config, config.image_size)
        self.adapter = build_adapter(config.adapter, self.geometry, config.text_config)
        self.adapter.attach(self.language_model)
        if config.num_image_tokens not in (None, self.adapter.num_image_tokens):
            raise BackboneMismatchError(
                f"The config says num_image_tokens={config.num_image_tokens}, but the adapter on this tower produces "
                f"{self.adapter.num_image_tokens} visual tokens per image."
            )
        config.num_image_tokens = self.adapter.num_image_tokens
        self._freeze_bases()
        self.post_init()

    # ----------------------------------------------------------------------------------------------- parts

    def _freeze_bases(self) -> None:
        for module in (self.vision_tower, self.language_model):
            module.requires_grad_(False)
        for name in self.adapter.trainable_base_parameter_names():
            self.language_model.get_parameter(name).requires_grad_(True)

    def train(self, mode: bool = True) -> "VisionAdapterForCausalLM":
        """Train the adapter; the frozen bases stay in eval mode (no dropout, fixed norm statistics).

        With gradient checkpointing on, the LM's checkpointed layers alone keep `training=mode`, because
        transformers only checkpoints layers that are training; their submodules (dropouts) stay in eval. LoRA
        layers that PEFT put into the LM are trained, so their dropout follows `mode`.
        """
        super().train(mode)
        self.vision_tower.eval()
        self.language_model.eval()
        for module in self.language_model.modules():
            if getattr(module, "gradient_checkpointing", False):
                module.training = mode
            lora_dropout = getattr(module, "lora_dropout", None)  # PEFT's LoRA layers keep one per adapter name
            if isinstance(lora_dropout, nn.ModuleDict):
                lora_dropout.train(mode)
        return self

    def cast_language_model(self, dtype: torch.dtype) -> "VisionAdapterForCausalLM":
        """Run the frozen LM in `dtype` (say bfloat16, whose matmuls are about twice as fast on recent CPUs) while
        the tower and a prefix adapter keep theirs; the visual tokens are cast at the placeholders."""
        if self.adapter.reaches_into_lm:
            raise AdapterConfigError(
                f"cast_language_model is for prefix adapters; {type(self.adapter).__name__} runs inside the LM's "
                "layers. Load the whole model in one dtype instead (from_vision_text_pretrained(..., dtype=...))."
            )
        self.language_model.to(dtype)
        return self

    def get_nb_trainable_parameters(self) -> Tuple[int, int]:
        """(trainable, total) parameter counts, as PEFT reports them."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return trainable, sum(p.numel() for p in self.parameters())

    def print_trainable_parameters(self) -> str:
        """Print and return `trainable params: N || all params: M || trainable%: P`, as PEFT does."""
        trainable, total = self.get_nb_trainable_parameters()
        line = f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"
        print(line)
        return line

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def get_decoder(self) -> nn.Module:
        return self.language_model.get_decoder()

    @property
    def model(self) -> nn.Module:
        """The LM's decoder stack (`LlamaModel`, GPT-2's `transformer`, ...), where `*ForCausalLM` code looks for it."""
        return self.language_model.get_decoder()

    def resize_token_embeddings(self, new_num_tokens: Optional[int] = None, pad_to_multiple_of=None, **kwargs):
        """Resize the LM's input and output embeddings together and record the size in both configs.

        Not needed for the image placeholder, whose id may lie outside the vocabulary; this is for new text tokens.
        """
        embeddings = self.language_model.resize_token_embeddings(new_num_tokens, pad_to_multiple_of, **kwargs)
        self.config.vocab_size = embeddings.num_embeddings
        return embeddings

    # ----------------------------------------------------------------------------------------------- images

    def get_vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Tower features the adapter reads, [B, T, L, S, Dv], from pixel_values [B, C, H, W] or [B, T, C, H, W]
        (what a feature cache stores and `forward(image_features=...)` takes)."""
        check_pixel_values(pixel_values, self.config.vision_config.num_channels, self.config.image_size)
        adapter_config = self.config.adapter
        with torch.no_grad():
            return select_features(
                self.vision_tower,
                pixel_values.to(self.vision_tower.dtype),
                self.geometry,
                adapter_config.feature_layers,
                adapter_config.feature_select,
                adapter_config.feature_norm,
            )

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        """The images as the LM receives them, as transformers' vision-language models return them.

        `pooler_output`: the adapter's visual tokens, [N_img, N, D] (LLaMA-Adapter V2: the visual tokens it adds in
        the early layers, [B, Nv, D]); `last_hidden_state`: the tower features it read, [B, T, L, S, Dv] (the same
        as `get_vision_features`).
        """
        features = self.get_vision_features(pixel_values)
        embedded = self._embed_image_features(features)
        return BaseModelOutputWithPooling(
            last_hidden_state=features, pooler_output=embedded.tokens if embedded.tokens is not None else embedded.context
        )

    def _embed_image_features(
        self, image_features: torch.Tensor, prompt_embeds: Optional[torch.Tensor] = None
    ) -> AdapterOutput:
        """Tower features [B, T, L, S, Dv] (and, for adapters that read the prompt, the text before each image
        [B, D]) -> the adapter's visual tokens and in-layer context."""
        adapter_dtype = next(self.adapter.parameters()).dtype
        if prompt_embeds is not None:
            prompt_embeds = prompt_embeds.to(adapter_dtype)
        return self.adapter.embed_images(image_features.to(adapter_dtype), prompt_embeds)

    def _embed_text(self, input_ids: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
        """The LM's input embeddings of `input_ids` [B, S], placeholders embedded as id 0 for now: [B, S, D]."""
        text_ids = input_ids.masked_fill(image_mask, 0)  # placeholders may lie outside the LM vocabulary
        vocab_size = self.get_input_embeddings().num_embeddings
        if int(text_ids.max()) >= vocab_size or int(text_ids.min()) < 0:
            raise InvalidPromptError(
                f"input_ids hold ids outside the LM vocabulary (0..{vocab_size - 1}) that are not image placeholders."
            )
        return self.get_input_embeddings()(text_ids)

    @staticmethod
    def _text_before_images(
        text_embeds: torch.Tensor, image_mask: torch.Tensor, attention_mask: Optional[torch.Tensor], num_images: int
    ) -> Optional[torch.Tensor]:
        """The mean embedding of the text before each image in its row: [N_img, D] in fp32, zeros where no text
        comes first. Padding and other images' placeholders are left out, so a left-padded row gives what it gives
        alone. None when the placeholders do not split evenly over the images (the merge then says why)."""
        total = int(image_mask.sum())
        if num_images == 0 or total == 0 or total % num_images:
            return None
        length = image_mask.shape[1]
        first = image_mask.flatten().nonzero().squeeze(-1)[:: total // num_images]  # [N_img] each image's first slot
        rows, starts = first // length, first % length
        before = torch.arange(length, device=image_mask.device) < starts[:, None]  # [N_img, S]
        keep = before & ~image_mask[rows]
        if attention_mask is not None:
            keep &= attention_mask[rows, -length:].bool()
        weights = keep.float().unsqueeze(-1)  # [N_img, S, 1]
        return (weights * text_embeds[rows].float()).sum(1) / weights.sum(1).clamp(min=1)  # [N_img, D]

    def _merge_image_tokens(
        self, embeds: torch.Tensor, image_mask: torch.Tensor, image_tokens: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """Put the visual tokens [N_img, N, D] at the placeholders of the text embeddings [B, S, D]."""
        num_placeholders = int(image_mask.sum())
        num_visual = 0 if image_tokens is None else image_tokens.shape[0] * image_tokens.shape[1]
        if num_placeholders != num_visual:
            raise ImageTokenMismatchError(
                f"The text holds {num_placeholders} `{self.config.image_token}` placeholder tokens but the images give "
                f"{num_visual} visual tokens ({self.config.num_image_tokens} per image). Build inputs with the "
                "model's processor, which expands each placeholder, and pass one image per placeholder."
            )
        if image_tokens is None:
            return embeds
        return embeds.masked_scatter(image_mask.unsqueeze(-1), image_tokens.to(embeds.dtype))

    # ----------------------------------------------------------------------------------------------- forward

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        pixel_values: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        cache=None,
        inputs_embeds: Optional[torch.Tensor] = None,
        labels: Optional[torch.LongTensor] = None,
        use_cache: Optional[bool] = None,
        logits_to_keep: Union[int, torch.Tensor] = 0,
        image_features: Optional[torch.Tensor] = None,
        adapter_context: Optional[Any] = None,
        supervised_logits_only: Optional[bool] = None,
        **kwargs,
    ) -> VisionAdapterOutputWithPast:
        r"""
        Args:
            input_ids: [B, S] token ids, with each image's placeholders already expanded by the processor.
            pixel_values: [N_img, C, H, W] images in placeholder order, or [B, T, C, H, W] frames.
            image_features: precomputed tower features [B, T, L, S, Dv] (a feature cache) instead of pixel_values.
            cache: the KV cache of earlier steps (transformers' `Cache`); `past_key_values` is accepted as its old
                name.
            labels: [B, S] targets, -100 where nothing is supervised (`labels=input_ids` works: image placeholder
                positions are never supervised); the loss is taken at the supervised positions only.
            adapter_context: the in-layer context of a previous prefill, carried by `generate`.
            supervised_logits_only: with labels, run the LM head only where the next token is supervised and return
                `logits` [N, V] for those N positions (faster training: the head over the whole vocabulary is the
                largest matmul of a small LM). Default: `config.supervised_logits_only` (False: `logits` is
                [B, S, V], as every `*ForCausalLM` returns it; hf_vadapter's training turns it on). Its name holds
                no "label": the Trainer takes every forward argument with "label" in its name for a label column.
        """
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        if cache is None:
            cache = kwargs.pop("past_key_values", None)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        past_length = cache.get_seq_length() if cache is not None else 0
        sequence = input_ids if input_ids is not None else inputs_embeds
        self._check_text_inputs(sequence, attention_mask, labels, past_length)
        if pixel_values is not None and image_features is not None:
            raise InvalidImageError(
                "Pass pixel_values or image_features, not both: the model would read only one of them."
            )
        if image_features is not None:
            adapter_config = self.config.adapter
            check_image_features(
                image_features, self.geometry, adapter_config.feature_layers, adapter_config.feature_select
            )
        elif pixel_values is not None:
            image_features = self.get_vision_features(pixel_values)
        image_tokens, image_mask = None, None
        if input_ids is not None:
            image_mask = input_ids == self.config.image_token_id  # [B, S]
            inputs_embeds = self._embed_text(input_ids, image_mask)  # [B, S, D]
        if image_features is not None:
            if image_mask is None:
                raise ValueError("Images need input_ids with placeholders, not inputs_embeds.")
            prompt_embeds = None
            if self.adapter.reads_prompt:
                prompt_embeds = self._text_before_images(inputs_embeds, image_mask, attention_mask, len(image_features))
            embedded = self._embed_image_features(image_features, prompt_embeds)
            image_tokens, adapter_context = embedded.tokens, embedded.context
            self._check_frames(image_features, image_tokens)
        if image_mask is not None:
            inputs_embeds = self._merge_image_tokens(inputs_embeds, image_mask, image_tokens)

        if position_ids is None and attention_mask is not None:
            # Positions follow the mask, so left-padded rows see the same positions as unpadded single runs.
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -inputs_embeds.shape[1] :]
        if labels is not None:
            if image_mask is not None:  # labels=input_ids (HF style) would supervise placeholder ids
                labels = labels.masked_fill(image_mask, IGNORE_INDEX)
            # Logit at t predicts token t + 1.
            next_labels = labels[:, 1:]
            supervised = torch.zeros_like(labels, dtype=torch.bool)  # [B, S]
            supervised[:, :-1] = next_labels != IGNORE_INDEX
            if supervised_logits_only is None:
                supervised_logits_only = getattr(self.config, "supervised_logits_only", False)
            if supervised_logits_only:
                logits_to_keep = supervised

        with self.adapter.injected(adapter_context, image_mask):
            outputs = self.language_model(
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                position_ids=position_ids,
                **{_cache_argument_name(self.language_model): cache},
                use_cache=use_cache,
                logits_to_keep=logits_to_keep,
                **kwargs,
            )

        loss = None
        if labels is not None:
            targets = next_labels[next_labels != IGNORE_INDEX]  # [N]
            logits = outputs.logits if supervised_logits_only else outputs.logits[supervised]  # [N, V]
            loss = nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
            loss = loss / (num_items_in_batch if num_items_in_batch is not None else max(targets.numel(), 1))
        return VisionAdapterOutputWithPast(
            loss=loss,
            logits=outputs.logits,
            **{_cache_field_name(): _output_cache(outputs)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            adapter_context=adapter_context if self.adapter.context_persists else None,
        )

    def _check_text_inputs(
        self,
        sequence: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        labels: Optional[torch.Tensor],
        past_length: int,
    ) -> None:
        """Typed errors for labels and masks that do not fit input_ids, and for sequences past the LM's context.

        `sequence` is input_ids [B, S] or inputs_embeds [B, S, D]. The mask values are checked at prefill only
        (decode steps append ones to it).
        """
        shape = tuple(sequence.shape[:2])
        if labels is not None and tuple(labels.shape) != shape:
            raise InvalidInputError(
                f"labels have shape {tuple(labels.shape)} but input_ids {shape}: give one label per token (-100 where "
                "nothing is supervised). The processor builds both with text_target."
            )
        if attention_mask is not None and past_length == 0:
            if bool(((attention_mask != 0) & (attention_mask != 1)).any()):
                raise InvalidInputError(
                    "attention_mask holds values other than 0 and 1; it marks real tokens with 1 and padding with 0."
                )
        length = max(past_length + shape[1], attention_mask.shape[-1] if attention_mask is not None else 0)
        limit = getattr(self.config.text_config, "max_position_embeddings", None)
        if limit is None or length <= limit:
            return
        if self._has_learned_positions(limit):
            raise InvalidPromptError(
                f"The sequence is {length} tokens, but the {self.config.text_config.model_type} LM has learned "
                f"positions for {limit} only. Shorten the prompt (processor max_length={limit}, which drops text "
                "but never image placeholders) or lower max_new_tokens."
            )
        logger.warning_once(
            f"The sequence is {length} tokens, past the LM's max_position_embeddings={limit}: outputs may degrade "
            "beyond the context the LM was trained on."
        )

    def _has_learned_positions(self, limit: int) -> bool:
        """Whether the LM looks positions up in a table (GPT-2, OPT) that has no row past `limit`, rather than
        rotating them (rope), which runs on past its trained context."""
        words = self.get_input_embeddings()
        return any(
            isinstance(module, nn.Embedding) and module is not words and module.num_embeddings >= limit
            for module in self.language_model.modules()
        )

    def _check_frames(self, image_features: torch.Tensor, image_tokens: Optional[torch.Tensor]) -> None:
        """Frames [B, T > 1] given to an adapter that makes tokens per frame: the processor reserved one frame's."""
        frames = image_features.shape[1]
        if frames > 1 and image_tokens is not None and image_tokens.shape[1] != self.config.num_image_tokens:
            raise ImageTokenMismatchError(
                f"The {self.config.adapter.adapter_type} adapter made {image_tokens.shape[1]} visual tokens from "
                f"{frames} frames, but the processor reserves {self.config.num_image_tokens} per image or video: this "
                "adapter reads one frame at a time. Pass the frames as separate images (one `<image>` each), or use "
                "an adapter that resamples frames (perceiver_resampler, palm2_vadapter)."
            )

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool = False, **kwargs) -> Dict[str, Any]:
        inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            # Like pixel_values, cached tower features belong to the prefill only: their tokens are in the KV cache.
            inputs.pop("image_features", None)
        return inputs

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, *args, **kwargs) -> Dict[str, Any]:
        model_kwargs = super()._update_model_kwargs_for_generation(outputs, model_kwargs, *args, **kwargs)
        if getattr(outputs, "adapter_context", None) is not None:
            model_kwargs["adapter_context"] = outputs.adapter_context
        return model_kwargs

    # ----------------------------------------------------------------------------------------------- building

    @classmethod
    def from_vision_text_pretrained(
        cls,
        vision_model_name_or_path: str,
        text_model_name_or_path: str,
        adapter_config: Optional[AdapterConfig] = None,
        *,
        vision_revision: Optional[str] = None,
        text_revision: Optional[str] = None,
        image_size: Optional[int] = None,
        image_token: str = "<image>",
        image_token_id: Optional[int] = None,
        dtype: Optional[torch.dtype] = None,
        attn_implementation: Union[None, str, Dict[str, str]] = None,
        init_adapter_weights: bool = True,
        **load_kwargs,
    ) -> "VisionAdapterForCausalLM":
        """Join a pretrained vision tower and a pretrained causal LM (Hub ids or local folders) with a new adapter.

        The bases keep their loaded weights; only the adapter is freshly initialised (from any pretrained parts its
        config names, such as PaLM2-VAdapter's tiny LM, unless `init_adapter_weights=False`). `image_size` defaults
        to the tower's image processor size, and `image_token_id` to the id the LM's tokenizer gives `image_token`
        once the processor adds it (`len(tokenizer)` for a new token).
        """
        shared = dict(dtype=dtype, **load_kwargs)
        vision_tower = load_vision_tower(
            vision_model_name_or_path, revision=vision_revision, **shared, **_attention_for(attn_implementation, "vision")
        )
        language_model = AutoModelForCausalLM.from_pretrained(
            text_model_name_or_path, revision=text_revision, **shared, **_attention_for(attn_implementation, "text")
        )
        if image_size is None:
            image_size = image_size_of(vision_model_name_or_path, vision_revision, vision_tower.config)
        if image_token_id is None:
            image_token_id = placeholder_token_id(text_model_name_or_path, text_revision, image_token)
        adapter_config = adapter_config if adapter_config is not None else MLPProjectorConfig()
        names = dict(
            vision_model_name_or_path=str(vision_model_name_or_path),
            vision_revision=vision_revision,
            text_model_name_or_path=str(text_model_name_or_path),
            text_revision=text_revision,
        )
        config = VisionAdapterConfig(
            vision_config=vision_tower.config,
            text_config=language_model.config,
            adapter_config=type(adapter_config).from_dict({**adapter_config.to_dict(), **names}),
            image_size=image_size,
            image_token=image_token,
            image_token_id=image_token_id,
            **names,
        )
        model = cls(config, vision_tower=vision_tower, language_model=language_model)
        if init_adapter_weights:
            model.adapter.load_initial_weights(**hub_only(load_kwargs))
        model.generation_config = language_model.generation_config
        if dtype is not None:  # "auto": the adapter takes the dtype the LM was stored in
            model.adapter.to(language_model.dtype if dtype == "auto" else dtype)
        if load_kwargs.get("device_map") is not None:  # the adapter joins the LM's embeddings
            model.adapter.to(language_model.get_input_embeddings().weight.device)
            model.hf_device_map = {
                f"{part}.{name}" if name else part: device
                for part, base in (("vision_tower", vision_tower), ("language_model", language_model))
                for name, device in (getattr(base, "hf_device_map", None) or {"": base.device}).items()
            }
        return model.train(False)

    # ----------------------------------------------------------------------------------------------- adapter I/O

    def adapter_state_dict(self) -> Dict[str, torch.Tensor]:
        """Everything the adapter trains: `adapter.*` plus any LM parameters the adapter unfroze (such as norms)."""
        base_keys = {f"language_model.{name}" for name in self.adapter.trainable_base_parameter_names()}
        return {
            key: value for key, value in self.state_dict().items() if key.startswith("adapter.") or key in base_keys
        }

    def save_adapter(self, save_directory: Union[str, os.PathLike], processor=None) -> None:
        """Write an adapter-only checkpoint into `save_directory`: `save_pretrained(save_directory, processor=...)`."""
        self.save_pretrained(save_directory, processor=processor)

    def write_adapter_files(
        self, folder: Path, processor=None, state_dict: Optional[Dict[str, torch.Tensor]] = None
    ) -> None:
        """The files of an adapter-only checkpoint, written into `folder` as they are (no atomicity, no manifest).

        `state_dict` (a full state dict, as FSDP or DeepSpeed gather it) supplies the adapter tensors when given.
        """
        own = self.adapter_state_dict()
        if state_dict is not None:
            own = {key: state_dict[key] for key in own if key in state_dict}
        check_finite_weights(own, f"Not saving the adapter to {folder}")
        save_safetensors(own, folder / ADAPTER_WEIGHTS_NAME)
        self.config.adapter.save_pretrained(folder)
        self._save_config_with_code(folder)
        if self.can_generate() and self.generation_config is not None:
            self.generation_config.save_pretrained(folder)
        if processor is not None:
            processor.save_pretrained(folder)

    def save_pretrained(
        self,
        save_directory: Union[str, os.PathLike],
        *args,
        processor=None,
        full: bool = False,
        state_dict: Optional[Dict[str, torch.Tensor]] = None,
        is_main_process: bool = True,
        **kwargs,
    ) -> None:
        """Save what the model owns, crash-safely, as `PeftModel.save_pretrained` does: the adapter.

        Adapter-only (the default): `adapter_model.safetensors` (the trained tensors only), `vadapter_config.json`
        and `config.json` (with the base ids and revisions, `auto_map` and the remote-code files),
        `generation_config.json`, the processor when given, and `vadapter_manifest.json` listing them. The frozen
        bases are recorded by id and revision, never copied: `from_pretrained` fetches them. This is what the
        transformers `Trainer` writes into every `checkpoint-N` and on `save_model`.

        `full=True`: the merged model, bases included (`model.safetensors`, sharded when large; the other
        `PreTrainedModel.save_pretrained` options apply), for a folder that loads without the bases' repos.

        Other files in the folder are left alone (see `checkpoint_files.py`).
        """
        if not is_main_process:
            return
        if full:
            with checkpoint_writer(save_directory) as staging:
                self._set_auto_map()
                super().save_pretrained(staging, *args, state_dict=state_dict, **kwargs)
                if processor is not None:
                    processor.save_pretrained(staging)
            return
        if kwargs.pop("push_to_hub", False):
            raise CheckpointError(
                "save_pretrained(push_to_hub=True) is not how an adapter goes up: save it, then run `hf-vadapter push "
                "FOLDER user/repo` (or conversion.hub.push_adapter), which checks the folder and writes a model card."
            )
        # Options of the full save (shard size, serialization, variant) do not apply to the single adapter file.
        ignored = sorted(set(kwargs) - set(FULL_SAVE_OPTIONS)) + [f"positional {a!r}" for a in args]
        if ignored:
            raise TypeError(f"save_pretrained() got unexpected arguments {ignored}.")
        with checkpoint_writer(save_directory) as staging:
            self.write_adapter_files(staging, processor=processor, state_dict=state_dict)

    def _set_auto_map(self) -> None:
        module = type(self).__module__.split(".")[-1]
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        auto_map["AutoConfig"] = f"{type(self.config).__module__.split('.')[-1]}.{type(self.config).__name__}"
        auto_map.update({name: f"{module}.{type(self).__name__}" for name in AUTO_MAP_MODEL_CLASSES})
        self.config.auto_map = auto_map

    def _save_config_with_code(self, folder: Path) -> None:
        self._set_auto_map()
        custom_object_save(self, folder, config=self.config)
        self.config.save_pretrained(folder)

    def load_vision_adapter(self, path: Union[str, os.PathLike]) -> None:
        """Load adapter weights from a folder or an `adapter_model.safetensors` file, checking every key and shape."""
        path = Path(path)
        if path.is_dir():
            verify_checkpoint(path)
        state = load_safetensors(path / ADAPTER_WEIGHTS_NAME if path.is_dir() else path)
        check_tensors(
            state,
            self.adapter_state_dict(),
            f"The adapter weights in {path} (for this model's {self.config.adapter.adapter_type} adapter)",
            "Was it saved from another adapter type or config, or for other backbone widths?",
        )
        check_finite_weights(state, f"Not loading the adapter from {path}")
        self.load_state_dict(state, strict=False)

    @classmethod
    def from_adapter_pretrained(
        cls,
        adapter_name_or_path: Union[str, os.PathLike],
        *,
        revision: Optional[str] = None,
        vision_model_name_or_path: Optional[str] = None,
        text_model_name_or_path: Optional[str] = None,
        config: Optional[VisionAdapterConfig] = None,
        dtype: Optional[Union[str, torch.dtype]] = None,
        **kwargs,
    ) -> "VisionAdapterForCausalLM":
        """Rebuild the bases from the ids recorded in an adapter-only checkpoint (folder or Hub repo) and load it.

        Pass `vision_model_name_or_path` / `text_model_name_or_path` to use other copies of the same bases. The
        `from_pretrained` options reach both bases and the adapter: `dtype` (a dtype or "auto": each base in the
        dtype it was stored in, the adapter in the LM's), `device_map` (the adapter goes where the LM's embeddings
        are), `attn_implementation`, `low_cpu_mem_usage`, `cache_dir` / `token` / `local_files_only` /
        `force_download` (`revision` and `subfolder` are the adapter repo's; the bases use their recorded
        revisions), and config attributes such as `output_hidden_states=True`. Any other keyword is refused with a
        TypeError.
        """
        hub_kwargs = {k: kwargs.pop(k) for k in HUB_KWARG_NAMES if k in kwargs}
        adapter_name_or_path, adapter_files = _checkpoint_location(
            adapter_name_or_path, kwargs.pop("subfolder", ""), hub_kwargs
        )
        base_kwargs = {k: kwargs.pop(k) for k in BASE_LOAD_KWARG_NAMES if k in kwargs}
        torch_dtype = kwargs.pop("torch_dtype", None)  # the old name of dtype
        dtype = dtype if dtype is not None else torch_dtype
        for name in PASSED_BY_TRANSFORMERS:
            kwargs.pop(name, None)
        if os.path.isdir(adapter_name_or_path):
            verify_checkpoint(adapter_name_or_path)
            warn_on_code_skew(adapter_name_or_path)
        config_file = resolve_file(adapter_name_or_path, "config.json", revision, adapter_files)
        weights_file = resolve_file(adapter_name_or_path, ADAPTER_WEIGHTS_NAME, revision, adapter_files)
        with loading_code_from(adapter_name_or_path, revision):  # a registered family's file lies beside it
            saved = VisionAdapterConfig.from_json_file(config_file)
        # The Auto classes pass the config they loaded, with config keywords (output_hidden_states=...) applied.
        config = config if isinstance(config, VisionAdapterConfig) else saved
        overrides = _config_overrides(saved, config, kwargs, adapter_name_or_path)
        if "attn_implementation" not in base_kwargs:  # the Auto classes put it into the config they pass
            chosen = {part: getattr(config, part)._attn_implementation for part in ATTENTION_PARTS}
            if chosen != {part: getattr(saved, part)._attn_implementation for part in ATTENTION_PARTS}:
                base_kwargs["attn_implementation"] = chosen
        adapter_config_file = resolve_file(adapter_name_or_path, ADAPTER_CONFIG_NAME, revision, adapter_files)
        _check_adapter_config_file(config, adapter_config_file)
        vision_name = vision_model_name_or_path or config.vision_model_name_or_path
        text_name = text_model_name_or_path or config.text_model_name_or_path
        if not vision_name or not text_name:
            raise CheckpointError(
                f"{adapter_name_or_path} does not record its base models; pass vision_model_name_or_path and "
                "text_model_name_or_path."
            )
        model = cls.from_vision_text_pretrained(
            vision_name,
            text_name,
            config.adapter,
            vision_revision=config.vision_revision,
            text_revision=config.text_revision,
            image_size=config.image_size,
            image_token=config.image_token,
            image_token_id=config.image_token_id,
            dtype=dtype,
            init_adapter_weights=False,  # the trained weights come next
            **hub_kwargs,
            **base_kwargs,
        )
        check_same_bases(config, model.config)
        model.load_vision_adapter(weights_file)
        for key, value in overrides.items():
            for target in (model.config, model.config.text_config, model.config.vision_config):
                if target is model.config or key in GENERIC_CONFIG_ATTRIBUTES:
                    setattr(target, key, value)
        model.config._name_or_path = str(adapter_name_or_path)
        model.name_or_path = str(adapter_name_or_path)
        if has_checkpoint_file(adapter_name_or_path, GENERATION_CONFIG_NAME, revision, adapter_files):
            # Saved with the adapter; older folders keep the LM's.
            generation = read_json_file(adapter_name_or_path, GENERATION_CONFIG_NAME, revision, adapter_files)
            model.generation_config = GenerationConfig.from_dict(generation)
        return model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Load a full checkpoint, or an adapter-only one (then the bases are fetched by their recorded ids and the
        loading options reach them, see `from_adapter_pretrained`)."""
        revision = kwargs.get("revision")
        pretrained_model_name_or_path, hub_kwargs = _checkpoint_location(
            pretrained_model_name_or_path, kwargs.pop("subfolder", ""), hub_only(kwargs)
        )
        if hub_kwargs.get("subfolder"):  # a Hub repo's subfolder: transformers' own loader takes it too
            kwargs["subfolder"] = hub_kwargs["subfolder"]
        if _is_adapter_only(pretrained_model_name_or_path, revision, hub_kwargs):
            if model_args:
                raise TypeError(f"from_pretrained() of an adapter-only checkpoint takes no positional {model_args}.")
            return cls.from_adapter_pretrained(pretrained_model_name_or_path, **kwargs)
        _refuse_pickle_only(pretrained_model_name_or_path, revision, hub_kwargs)
        if os.path.isdir(pretrained_model_name_or_path):
            verify_checkpoint(pretrained_model_name_or_path)
            warn_on_code_skew(pretrained_model_name_or_path)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)


def _attention_for(attn_implementation: Union[None, str, Dict[str, str]], base: str) -> Dict[str, str]:
    """The `attn_implementation` keyword for one base ("vision" or "text"): a string applies to both, a dict
    `{"vision_config": ..., "text_config": ...}` (transformers' form for composite models) names each."""
    if isinstance(attn_implementation, dict):
        attn_implementation = attn_implementation.get(f"{base}_config")
    return {} if attn_implementation is None else {"attn_implementation": attn_implementation}


def _config_overrides(
    saved: VisionAdapterConfig, config: VisionAdapterConfig, kwargs: Dict[str, Any], source
) -> Dict[str, Any]:
    """Config attributes to set on the loaded model: keywords that name one (the rest are refused), and what a
    config passed by the Auto classes changed against the saved one."""
    unknown = sorted(key for key in kwargs if not hasattr(config, key) or key in REQUIRED_CONFIG_STRUCTURE)
    if unknown:
        raise TypeError(
            f"from_pretrained({str(source)!r}) got unknown keyword arguments {unknown}. An adapter-only checkpoint "
            f"takes the loading options {sorted(HUB_KWARG_NAMES + BASE_LOAD_KWARG_NAMES + OTHER_LOAD_KWARG_NAMES)} "
            "and config attributes (such as output_hidden_states=True)."
        )
    saved_values, passed_values = saved.to_dict(), config.to_dict()
    changed = {
        key: getattr(config, key)
        for key, value in passed_values.items()
        if key not in REQUIRED_CONFIG_STRUCTURE and saved_values.get(key) != value and not key.startswith("_")
        and key != "transformers_version"
    }
    return {**changed, **kwargs}


def _cache_argument_name(language_model: nn.Module) -> str:
    """`cache` for LMs of transformers releases that renamed `past_key_values` (5.2x), else the old name."""
    parameters = inspect.signature(language_model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _cache_field_name() -> str:
    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def _output_cache(outputs) -> Any:
    """The cache an LM output holds, read without the deprecated name when the release has the new one."""
    return outputs.get(_cache_field_name())


def load_vision_tower(name_or_path: str, revision: Optional[str] = None, **kwargs) -> PreTrainedModel:
    """Load a vision tower; for a two-tower checkpoint (CLIP, SigLIP) only its vision half."""
    config = AutoConfig.from_pretrained(name_or_path, revision=revision, **hub_only(kwargs))
    vision_config = getattr(config, "vision_config", None) or config
    return AutoModel.from_pretrained(name_or_path, config=vision_config, revision=revision, **kwargs)


def _checkpoint_location(name_or_path, subfolder: Optional[str], hub_kwargs: Dict[str, Any]):
    """Where a checkpoint's own files are: `(name_or_path, hub_kwargs for its files)`. A local folder's `subfolder`
    is joined to it; a Hub repo's goes to every lookup of the checkpoint's files (never to the bases' repos)."""
    if not subfolder:
        return name_or_path, hub_kwargs
    if os.path.isdir(name_or_path):
        return os.path.join(name_or_path, subfolder), hub_kwargs
    return name_or_path, {**hub_kwargs, "subfolder": subfolder}


def _is_adapter_only(name_or_path, revision: Optional[str], hub_kwargs: Dict[str, Any]) -> bool:
    if not has_checkpoint_file(name_or_path, ADAPTER_WEIGHTS_NAME, revision, hub_kwargs):
        return False
    return not any(has_checkpoint_file(name_or_path, name, revision, hub_kwargs) for name in FULL_WEIGHTS_NAMES)


def _refuse_pickle_only(name_or_path, revision: Optional[str], hub_kwargs: Dict[str, Any]) -> None:
    """A folder or repo with pickle weights and no safetensors gets a clear refusal, never an unpickling attempt."""
    if any(has_checkpoint_file(name_or_path, name, revision, hub_kwargs) for name in FULL_WEIGHTS_NAMES):
        return
    pickles = [name for name in PICKLE_WEIGHTS_NAMES if has_checkpoint_file(name_or_path, name, revision, hub_kwargs)]
    if pickles:
        raise CheckpointError(
            f"{name_or_path} holds only {pickles}: hf_vadapter reads only safetensors (a pickle file can run code "
            "when loaded). Convert it where you trust it: load it with torch and save it again with "
            "`model.save_pretrained(folder)` (or `save_adapter`), which write safetensors."
        )


def _check_adapter_config_file(config: VisionAdapterConfig, adapter_config_file: str) -> None:
    """`vadapter_config.json` must say what config.json's `adapter_config` says: config.json builds the model, and a
    second file that disagrees (edited by hand, or from another save) would silently describe another adapter."""
    try:
        with open(adapter_config_file, encoding="utf-8") as handle:
            saved = adapter_config_from_dict(json.load(handle)).to_dict()
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{adapter_config_file} is not valid JSON ({error}).") from error
    differing = config_differences(saved, config.adapter.to_dict())
    if differing:
        details = ", ".join(differing[:8])
        raise CheckpointError(
            f"{adapter_config_file} and the adapter_config in config.json disagree ({ADAPTER_CONFIG_NAME} vs "
            f"config.json: {details}). config.json is what builds the model; a checkpoint written by "
            "`save_adapter` has both equal. Restore the file, or save the adapter again."
        )


def check_same_bases(saved: VisionAdapterConfig, loaded: VisionAdapterConfig) -> None:
    """Compare what the adapter was trained on with the bases just loaded, naming both sides on a mismatch."""
    checks = (
        ("tower type", saved.vision_config.model_type, loaded.vision_config.model_type),
        ("tower hidden size", saved.vision_config.hidden_size, loaded.vision_config.hidden_size),
        ("LM type", saved.text_config.model_type, loaded.text_config.model_type),
        ("LM hidden size", saved.text_config.hidden_size, loaded.text_config.hidden_size),
        ("LM layers", saved.text_config.num_hidden_layers, loaded.text_config.num_hidden_layers),
    )
    wrong = [f"{what}: adapter trained on {a}, bases loaded have {b}" for what, a, b in checks if a != b]
    if wrong:
        raise BackboneMismatchError("The bases do not match the adapter checkpoint: " + "; ".join(wrong) + ".")
