"""Finding files in a checkpoint (a local folder or a Hub repo) and checking its tensors against a module's.

The one place the model, PaLM2-VAdapter's stage handoff and the adapter loader resolve files and compare keys and
shapes, so that every checkpoint error reads alike.
"""

import json
import os
from typing import Any, Dict, Mapping, Optional

import torch
from transformers.utils import cached_file

from .errors import BackboneMismatchError, CheckpointError

# Loading keywords that concern where files come from, passed on to every Hub/folder lookup.
HUB_KWARG_NAMES = ("cache_dir", "token", "local_files_only", "force_download", "proxies")


def hub_only(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    return {k: kwargs[k] for k in HUB_KWARG_NAMES if k in kwargs}


def resolve_file(
    name_or_path, filename: str, revision: Optional[str] = None, hub_kwargs: Optional[Dict[str, Any]] = None,
    what: str = "an hf_vadapter adapter checkpoint",
) -> str:
    """Path of `filename` in a local folder or a Hub repo; a `CheckpointError` naming `what` was expected if absent."""
    resolved = cached_file(
        str(name_or_path), filename, revision=revision, _raise_exceptions_for_missing_entries=False,
        **(hub_kwargs or {}),
    )
    if resolved is None:
        raise CheckpointError(f"{name_or_path} has no {filename}; it is not {what}.")
    return resolved


def read_json_file(name_or_path, filename: str, revision: Optional[str] = None, hub_kwargs=None, **kwargs) -> Dict:
    path = resolve_file(name_or_path, filename, revision, hub_kwargs, **kwargs)
    try:
        with open(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}).") from error


def has_checkpoint_file(
    name_or_path, filename: str, revision: Optional[str] = None, hub_kwargs: Optional[Dict[str, Any]] = None
) -> bool:
    """Whether a local folder or Hub repo holds `filename` (missing files and unreachable Hubs answer False)."""
    if os.path.isdir(name_or_path):
        return os.path.isfile(os.path.join(name_or_path, filename))
    resolved = cached_file(
        str(name_or_path),
        filename,
        revision=revision,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
        **(hub_kwargs or {}),
    )
    return resolved is not None


def check_tensors(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str, hint: str,
    allow_unexpected: bool = False,
) -> None:
    """Every tensor of `expected` is in `state` with its shape (and, unless allowed, nothing else is).

    Raises `CheckpointError` for missing or unexpected names and `BackboneMismatchError` for other shapes; `hint`
    says what the mismatch usually means.
    """
    missing = sorted(set(expected) - set(state))
    unexpected = [] if allow_unexpected else sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not match: missing {_few(missing)}, unexpected {_few(unexpected)}. {hint}"
        )
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise BackboneMismatchError(
            f"{source} has tensors of other shapes than expected (checkpoint vs model): "
            + ", ".join(f"{k}: {a} vs {b}" for k, a, b in wrong[:8])
            + f". {hint}"
        )


def _few(names) -> str:
    return f"{names[:8]}{'...' if len(names) > 8 else ''}"
