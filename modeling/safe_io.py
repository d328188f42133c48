"""Atomic writes of folders the library owns whole, and checked safetensors reads.

`atomic_directory` builds a folder that belongs to the library alone (a converted backbone in the cache, a
Trainer's `checkpoint-N`) in a temporary sibling and renames it into place once every file is flushed, so a process
killed mid-write leaves the previous one intact. Checkpoints saved into a user's folder go through
`checkpoint_files.checkpoint_writer` instead, which never swaps the folder. Reads accept safetensors only (no pickle) and turn a truncated
or corrupt file into a `CheckpointError` that names the file.
"""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Iterator, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CheckpointError

PathLike = Union[str, os.PathLike]


def fsync_tree(folder: PathLike) -> None:
    """Flush every file below `folder`, then the folder itself, to disk."""
    folder = Path(folder)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_directory(target: PathLike) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `target` in one rename. Only for folders the library owns
    whole. On any exception the temporary folder is removed and `target` is left as it was."""
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(staging, 0o755)  # mkdtemp makes it 0700
    try:
        yield staging
        promote_directory(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def promote_directory(staging: PathLike, final: PathLike) -> None:
    """Flush `staging` and rename it to `final`. An existing `final` is moved aside first and removed only after the
    swap, so a complete folder exists at every instant."""
    staging, final = Path(staging), Path(final)
    fsync_tree(staging)
    if final.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.rename(final, retired / final.name)
        os.rename(staging, final)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.rename(staging, final)


def save_safetensors(tensors: Dict[str, torch.Tensor], path: PathLike, metadata: Dict[str, str] = None) -> None:
    """Write `tensors` as safetensors (contiguous, detached, on CPU) with `format: pt` metadata."""
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()}
    save_file(tensors, str(path), metadata={"format": "pt", **(metadata or {})})


def load_safetensors(path: PathLike, device: str = "cpu") -> Dict[str, torch.Tensor]:
    """Read a safetensors file, turning a missing, truncated or corrupt file into a `CheckpointError`."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"Refusing to load {path}: hf_vadapter loads only .safetensors files, never pickles.")
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file {path} does not exist.")
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"Could not read {path} ({error}). The file is truncated or corrupt; re-save or re-download it."
        ) from error
