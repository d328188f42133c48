"""Adapter-only checkpoints: what a training run writes instead of the frozen bases.

A checkpoint folder holds `adapter_model.safetensors`, the adapter config (`ADAPTER_CONFIG_NAME`), the model `config.json` (with the base
ids, `auto_map` and the remote-code files: `from_pretrained` loads it onto the bases), the processor, and the
Trainer's own optimizer / scheduler / RNG / trainer-state files.
"""

import os
from pathlib import Path
from typing import Dict, Optional, Union

import torch

from ..modeling.adapter_config import ADAPTER_WEIGHTS_NAME, BASE_NAME_FIELDS, config_differences
from ..modeling.checkpoint_files import checkpoint_writer
from ..modeling.configuration_vadapter import VisionAdapterConfig
from ..modeling.errors import AdapterConfigError, CheckpointError
from ..modeling.modeling_vadapter import check_same_bases

PathLike = Union[str, os.PathLike]
TRAINING_ARGS_NAME = "training_args.bin"


def save_adapter_files(
    model,
    folder: PathLike,
    processor=None,
    state_dict: Optional[Dict[str, torch.Tensor]] = None,
    training_args=None,
) -> None:
    """Write `model`'s adapter-only checkpoint into `folder` as `model.save_adapter` does (crash-safe, other files
    left alone), plus the Trainer's `training_args.bin` when `training_args` is given.

    `state_dict` (a full state dict, as FSDP gathers it) supplies the adapter tensors when given.
    """
    with checkpoint_writer(folder) as staging:
        model.write_adapter_files(staging, processor=processor, state_dict=state_dict)
        if training_args is not None:
            torch.save(training_args, staging / TRAINING_ARGS_NAME)


def is_adapter_checkpoint(folder: PathLike) -> bool:
    return (Path(folder) / ADAPTER_WEIGHTS_NAME).is_file()


def load_adapter_checkpoint(model, folder: PathLike) -> None:
    """Load the adapter weights of a checkpoint folder into `model`, after checking that the checkpoint was written
    for the same bases and adapter config (as `from_adapter_pretrained` does); every key and shape is checked too."""
    if not is_adapter_checkpoint(folder):
        raise CheckpointError(f"{folder} holds no {ADAPTER_WEIGHTS_NAME}; it is not an adapter checkpoint.")
    check_checkpoint_fits(model, folder)
    model.load_vision_adapter(folder)


def check_checkpoint_fits(model, folder: PathLike) -> None:
    """Refuse a checkpoint written for other bases (BackboneMismatchError) or another adapter config
    (AdapterConfigError), such as another pool size, whose weights may still have the same shapes."""
    config_file = Path(folder) / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{folder} has no config.json; it is not an adapter checkpoint written by hf_vadapter.")
    saved = VisionAdapterConfig.from_json_file(config_file)
    check_same_bases(saved, model.config)
    differing = config_differences(saved.adapter.to_dict(), model.config.adapter.to_dict(), ignore=BASE_NAME_FIELDS)
    if differing:
        raise AdapterConfigError(
            f"{folder} was written for another adapter config (checkpoint vs this run: {', '.join(differing[:8])}). "
            "Resume with that run's settings (its run_config.json), or train into a new output_dir."
        )


def staging_name(checkpoint_name: str) -> str:
    """The hidden folder a checkpoint is assembled in; `checkpoint-*` globs and `get_last_checkpoint` skip it."""
    return f".tmp-{checkpoint_name}"


def load_partial_adapter(model, folder: PathLike) -> Dict[str, list]:
    """Initialise `model`'s adapter from another run's adapter weights: tensors whose name and shape match load.

    Progressive stages use this (a run starting from a previous run's output folder). Returns the loaded, skipped
    (shape differs or absent here) and untouched (not in the file) names; raises when nothing matches.
    """
    from ..modeling.safe_io import load_safetensors

    path = Path(folder)
    path = path / ADAPTER_WEIGHTS_NAME if path.is_dir() else path
    state = load_safetensors(path)
    own = model.adapter_state_dict()
    loaded = {key: value for key, value in state.items() if key in own and own[key].shape == value.shape}
    if not loaded:
        raise CheckpointError(
            f"None of the {len(state)} tensors in {path} matches this model's adapter ({len(own)} tensors): the "
            "previous stage has another adapter type or shape. Use the adapter's own handoff instead (for "
            "PaLM2-VAdapter, adapter_config: {stage1_name_or_path: <stage-1 folder>})."
        )
    model.load_state_dict(loaded, strict=False)
    return {
        "loaded": sorted(loaded),
        "skipped": sorted(set(state) - set(loaded)),
        "untouched": sorted(set(own) - set(loaded)),
    }
