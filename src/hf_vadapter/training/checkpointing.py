"""Adapter-only checkpoints: what a training run writes instead of the frozen bases.

A checkpoint folder holds `adapter_model.safetensors`, the adapter config (`ADAPTER_CONFIG_NAME`), the model `config.json` (with the base
ids, `auto_map` and the remote-code files: `from_pretrained` loads it onto the bases), the processor, and the
Trainer's own optimizer / scheduler / RNG / trainer-state files.
"""

import os
from pathlib import Path
from typing import Dict, Optional, Union

import torch

from ..modeling.adapter_config import ADAPTER_WEIGHTS_NAME
from ..modeling.checkpoint_files import checkpoint_writer
from ..modeling.errors import CheckpointError
from ..modeling.safe_io import save_safetensors

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
        model.write_adapter_files(staging, processor=processor)
        if state_dict is not None:
            keys = model.adapter_state_dict().keys()
            save_safetensors({key: state_dict[key] for key in keys if key in state_dict}, staging / ADAPTER_WEIGHTS_NAME)
        if training_args is not None:
            torch.save(training_args, staging / TRAINING_ARGS_NAME)


def is_adapter_checkpoint(folder: PathLike) -> bool:
    return (Path(folder) / ADAPTER_WEIGHTS_NAME).is_file()


def load_adapter_checkpoint(model, folder: PathLike) -> None:
    """Load the adapter weights of a checkpoint folder into `model` (every key and shape checked)."""
    if not is_adapter_checkpoint(folder):
        raise CheckpointError(f"{folder} holds no {ADAPTER_WEIGHTS_NAME}; it is not an adapter checkpoint.")
    model.load_vision_adapter(folder)


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
