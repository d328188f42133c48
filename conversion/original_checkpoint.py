"""Shared steps of the original-checkpoint converters (eP-ALM, LLaMA-Adapter V2) and their CLI hooks.

A converter turns an official checkpoint into an hf_vadapter adapter checkpoint in two steps:

1. `convert_*_state_dict(state, ...)` maps the official tensors through an explicit key table, checks every shape,
   and returns a `ConvertedAdapter`: the adapter config, the tensors under their hf_vadapter names (as
   `adapter_model.safetensors` holds them), the target tensors that legitimately have no source (`defaults`, taken
   from a freshly built adapter, e.g. identity scales), the source tensors the original code never reads
   (`ignored`, each with the reason) and behavioural notes. A source key the table does not know is an error:
   nothing is dropped silently.
2. `write_converted_adapter(converted, folder, vision, text)` builds the model on the two frozen bases, checks the
   converted tensors against the adapter it built (missing / unexpected keys, shapes), loads them and writes an
   adapter-only checkpoint with `save_adapter`, plus a `training_info.json` describing the provenance for the model
   card.

Original checkpoints are pickles: they are read only with `torch.load(path, weights_only=True)` (or as safetensors),
which refuses arbitrary objects.
"""

import argparse
import fnmatch
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from hf_vadapter.modeling.adapter_config import AdapterConfig
from hf_vadapter.modeling.errors import BackboneMismatchError, CheckpointError


@dataclass
class ConvertedAdapter:
    """An official checkpoint mapped onto an hf_vadapter adapter (see the module docstring)."""

    adapter_config: AdapterConfig
    tensors: Dict[str, torch.Tensor]
    defaults: Tuple[str, ...] = ()  # fnmatch patterns of target keys that keep the fresh adapter's values
    ignored: Dict[str, str] = field(default_factory=dict)  # source key -> why the original never uses it
    notes: List[str] = field(default_factory=list)
    source: str = ""


def load_original_checkpoint(path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """(state dict, the checkpoint's own `config` dict or {}) from an official `.pth` or a `.safetensors` file.

    Official checkpoints wrap the weights as `{"model": {...}, "config": {...}, ...}`; a bare state dict works too.
    A uniform `module.` prefix (a DistributedDataParallel save) is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), {}
        except Exception as error:  # SafetensorError has no common base with OSError
            raise CheckpointError(f"Could not read {path} ({error}); the file is truncated or corrupt.") from error
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"Could not load {path} with torch.load(weights_only=True) ({type(error).__name__}: {error}). Only "
            "tensors and plain containers are accepted, never arbitrary pickled objects. If the file is a trusted "
            "official checkpoint that pickles other objects, extract its weights where you trust it: "
            "`torch.save(torch.load(path, weights_only=False)['model'], 'weights.pth')`."
        ) from error
    config: Dict[str, Any] = {}
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        config = checkpoint.get("config") if isinstance(checkpoint.get("config"), dict) else {}
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise CheckpointError(f"{path} holds no state dict (got {type(checkpoint).__name__}).")
    not_tensors = sorted(k for k, v in checkpoint.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(f"{path}: the state dict holds non-tensor entries {not_tensors[:5]}.")
    if all(key.startswith("module.") for key in checkpoint):
        checkpoint = {key[len("module.") :]: value for key, value in checkpoint.items()}
    return dict(checkpoint), dict(config)


def check_shape(source_key: str, tensor: torch.Tensor, expected: Sequence[int], what: str) -> torch.Tensor:
    """`tensor` if it has the `expected` shape, else a BackboneMismatchError naming both sides."""
    if tuple(tensor.shape) != tuple(expected):
        raise BackboneMismatchError(
            f"{source_key} has shape {tuple(tensor.shape)}, but {what} needs {tuple(expected)}."
        )
    return tensor


def refuse_unknown(unknown: Sequence[str], what: str, hint: str = "") -> None:
    if unknown:
        raise CheckpointError(
            f"The {what} checkpoint holds {len(unknown)} keys this converter does not know, such as "
            f"{sorted(unknown)[:8]}. Nothing is dropped silently. {hint}".strip()
        )


def file_digest(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_converted_adapter(
    converted: ConvertedAdapter,
    folder,
    vision_model_name_or_path: str,
    text_model_name_or_path: str,
    *,
    vision_revision: Optional[str] = None,
    text_revision: Optional[str] = None,
    dtype: Optional[torch.dtype] = None,
    **load_kwargs,
):
    """Build the model on the two bases, load the converted tensors (checked), and `save_adapter` it to `folder`.

    Returns the model. Raises CheckpointError for missing or unexpected keys and BackboneMismatchError for shapes
    that do not fit these bases, both naming the two sides.
    """
    from hf_vadapter.modeling.modeling_vadapter import VisionAdapterForCausalLM
    from hf_vadapter.modeling.processing_vadapter import VisionAdapterProcessor

    model = VisionAdapterForCausalLM.from_vision_text_pretrained(
        vision_model_name_or_path,
        text_model_name_or_path,
        converted.adapter_config,
        vision_revision=vision_revision,
        text_revision=text_revision,
        dtype=dtype,
        **load_kwargs,
    )
    expected = model.adapter_state_dict()
    defaulted = [k for k in expected if k not in converted.tensors and _matches(k, converted.defaults)]
    missing = sorted(k for k in expected if k not in converted.tensors and k not in defaulted)
    unexpected = sorted(k for k in converted.tensors if k not in expected)
    if missing or unexpected:
        raise CheckpointError(
            f"The converted {converted.adapter_config.adapter_type} tensors do not match the adapter built on "
            f"{text_model_name_or_path}: missing {missing[:8]}, unexpected {unexpected[:8]}. The bases differ from "
            "the ones the original was trained on, or the converter's target layout is out of date."
        )
    wrong = [(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in converted.tensors.items() if v.shape != expected[k].shape]
    if wrong:
        raise BackboneMismatchError(
            "Converted tensors have other shapes than the adapter built on these bases (converted vs built): "
            + ", ".join(f"{k}: {a} vs {b}" for k, a, b in wrong[:8])
            + ". The original was trained on bases of other widths."
        )
    state = {k: v.to(expected[k].dtype) for k, v in converted.tensors.items()}
    model.load_state_dict(state, strict=False)
    processor = VisionAdapterProcessor.for_model(model)
    model.save_adapter(folder, processor=processor)
    info = {
        "description": f"Converted with hf_vadapter from the original checkpoint {converted.source}.",
        "training_data": "See the original release; the converted weights are unchanged.",
        "tags": ["converted"],
        "conversion": {
            "source": converted.source,
            "defaults": sorted(defaulted),
            "ignored": converted.ignored,
            "notes": converted.notes,
        },
    }
    (Path(folder) / "training_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return model


def _matches(key: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)


# ---------------------------------------------------------------------------------------------------- CLI hooks

FORMATS = ("epalm", "llama-adapter-v2")


def add_convert_original_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register the convert-original arguments on an argparse (sub)parser."""
    parser.add_argument("format", choices=FORMATS, help="which official checkpoint layout the file has")
    parser.add_argument("checkpoint", help="the official .pth checkpoint (read with weights_only=True) or .safetensors")
    parser.add_argument("output_dir", help="where to write the hf_vadapter adapter checkpoint")
    parser.add_argument("--vision-model", required=True, help="the vision tower the original used (Hub id or folder)")
    parser.add_argument("--text-model", required=True, help="the LM the original used (Hub id or folder)")
    parser.add_argument("--vision-revision", default=None)
    parser.add_argument("--text-revision", default=None)
    parser.add_argument("--injection-layer", type=int, default=None,
                        help="epalm: the original start_layer_idx (default: from the checkpoint's config)")
    parser.add_argument("--end-layer", type=int, default=None,
                        help="epalm: the original end_layer_idx (default: from the checkpoint's config)")
    parser.add_argument("--num-levels", type=int, default=None,
                        help="epalm: the original injected_hidden_states (needed with a shared connector)")
    parser.add_argument("--prompt-length", type=int, default=10,
                        help="llama-adapter-v2: the original query_len (10 in every release)")
    parser.add_argument("--drop-visual-path", action="store_true",
                        help="llama-adapter-v2: convert the language side only, dropping the visual path on purpose")
    return parser


def run_convert_original(args: argparse.Namespace) -> int:
    """Convert as the parsed arguments say; prints what happened and returns the exit status (0)."""
    if args.format == "epalm":
        from .original_epalm import convert_epalm_checkpoint

        converted = convert_epalm_checkpoint(
            args.checkpoint, args.output_dir, args.vision_model, args.text_model,
            vision_revision=args.vision_revision, text_revision=args.text_revision,
            injection_layer=args.injection_layer, end_layer=args.end_layer, num_levels=args.num_levels,
        )
    else:
        from .original_llama_adapter import convert_llama_adapter_v2_checkpoint

        converted = convert_llama_adapter_v2_checkpoint(
            args.checkpoint, args.output_dir, args.vision_model, args.text_model,
            vision_revision=args.vision_revision, text_revision=args.text_revision,
            prompt_length=args.prompt_length, drop_visual_path=args.drop_visual_path,
        )
    print(f"Wrote {args.output_dir}: {len(converted.tensors)} tensors converted.")
    for key, reason in sorted(converted.ignored.items()):
        print(f"  not used: {key} ({reason})")
    for note in converted.notes:
        print(f"  note: {note}")
    return 0
