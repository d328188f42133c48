"""Push a saved adapter checkpoint to the Hugging Face Hub as an adapter-only repo.

`push_adapter(folder, "user/repo")` checks the folder (`inspect_checkpoint`), writes a model card, and uploads in
one commit with the real `huggingface_hub` client: `create_repo`, `create_branch` for a new branch, then
`create_commit`. What goes up is exactly the checkpoint that `vadapter_manifest.json` lists (the files the last
`save_adapter` / `save_pretrained` wrote, checked against their recorded sizes and hashes) plus the model card; every
other file in the folder is left local and listed in `PushResult.skipped`. A folder without a manifest (saved by an
older hf_vadapter) is refused: re-save it. The manifest of an adapter save holds:

- `adapter_model.safetensors` and `config.json` (with `auto_map`, the base ids and revisions, and the adapter config
  as its `adapter_config` entry) and `vadapter_config.json`, as `model.save_adapter(folder, processor=processor)`
  writes them;
- the remote-code `.py` files next to them, so `trust_remote_code=True` loads the repo without hf_vadapter;
- the processor files (processor, image processor and tokenizer configs, tokenizer files, chat template);
- the manifest itself.

`README.md` is the folder's own if it has one, otherwise a generated card (see `model_card.py`) that reads the
training metrics files (`training_info.json`, `*_results.json`) locally. The frozen bases' weights never go up unless
`include_base=True` (then the folder must be a full `model.save_pretrained(folder, processor=processor)` save and the
repo redistributes the bases), and optimizer states, pickles, sub-folders (`checkpoint-*`, `runs/`),
`trainer_state.json` and `run_config.json` stay local even when listed. Remote files a previous push left that would now be
stale (`*.py`, weight files) are deleted in the same commit, so a repo that once held a full save cannot keep
being loaded as one.

The token comes from the usual places when `token=None` (`HF_TOKEN`, then the token saved by `hf auth login`);
`HF_ENDPOINT` picks the server.
"""

import argparse
import fnmatch
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hf_vadapter.modeling.adapter_config import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME
from hf_vadapter.modeling.checkpoint_files import MANIFEST_NAME, read_manifest, verify_checkpoint
from hf_vadapter.modeling.errors import CheckpointError, VisionAdapterError

from .model_card import RUN_CONFIG_NAME, TRAINER_STATE_NAME, is_hub_id, read_training_info, render_model_card

CONFIG_NAME = "config.json"
PROCESSOR_CONFIG_NAME = "processor_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model", "tiktoken.model")
FULL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
# Weight files of a full model. Without include_base their presence means the folder is not adapter-only.
BASE_WEIGHT_PATTERNS = (
    "model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin",
    "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack", "*.gguf",
)
# Top-level files that may go up, by suffix. Weights are handled separately; everything else stays local.
UPLOAD_SUFFIXES = (".json", ".py", ".txt", ".model", ".jinja", ".md", ".tiktoken")
# Training internals; run_config.json is read for the card but may hold local data paths.
NEVER_UPLOAD = (TRAINER_STATE_NAME, RUN_CONFIG_NAME, "optimizer.pt", "scheduler.pt", "training_args.bin")
# Remote files removed when this push does not upload them: stale code and weights of an earlier push.
STALE_REMOTE_PATTERNS = ("*.py", ADAPTER_WEIGHTS_NAME, ADAPTER_CONFIG_NAME, *BASE_WEIGHT_PATTERNS)
_COMMIT_ID = re.compile(r"[0-9a-f]{40}")


class HubPushError(VisionAdapterError, ValueError):
    """A push was refused before anything was uploaded (for example a public repo asked to be private)."""


@dataclass
class CheckpointSummary:
    """What `inspect_checkpoint` found in a folder: the files to upload and the facts for the model card."""

    folder: Path
    adapter_config: Dict[str, Any]
    model_config: Dict[str, Any]
    trainable_parameters: int
    adapter_bytes: int
    files: List[str]
    skipped: List[str]
    include_base: bool


@dataclass
class PushResult:
    """The outcome of `push_adapter`: where the commit went and what it changed."""

    repo_id: str
    revision: str
    commit_oid: Optional[str]
    commit_url: Optional[str]
    pr_url: Optional[str]
    uploaded: List[str]
    deleted: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    model_card: str = ""


# ---------------------------------------------------------------------------------------------------- checks


def _read_json_file(path: Path, what: str) -> Dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path.parent} has no {path.name} ({what}). {_SAVE_HINT}")
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}).") from error
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} must hold a JSON object, not {type(value).__name__}.")
    return value


_SAVE_HINT = "Save an adapter checkpoint with `model.save_adapter(folder, processor=processor)`."


def _tensor_shapes(path: Path) -> Dict[str, List[int]]:
    """Names and shapes from a safetensors header; a missing, truncated or corrupt file is a CheckpointError."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: list(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"Could not read {path} ({error}). The file is truncated or corrupt; re-save it before pushing."
        ) from error


def _check_finite(path: Path) -> None:
    from safetensors.torch import load_file

    bad = [name for name, tensor in load_file(str(path)).items() if tensor.is_floating_point() and not tensor.isfinite().all()]
    if bad:
        raise CheckpointError(f"{path} holds NaN or infinite values in {bad[:8]}: the training run diverged.")


def _check_bases(model_config: Dict[str, Any], allow_local_bases: bool) -> None:
    for role in ("vision", "text"):
        name = model_config.get(f"{role}_model_name_or_path")
        if not name:
            raise CheckpointError(
                f"config.json does not record the {role} base (`{role}_model_name_or_path`), so nobody could rebuild "
                "the model from this adapter. Build the model with `from_vision_text_pretrained(<hub ids>)`."
            )
        if not is_hub_id(str(name)) and not allow_local_bases:
            raise CheckpointError(
                f"The {role} base is recorded as the local path {name!r}: nobody who downloads the adapter can load "
                "it. Build the model from the bases' Hub ids (`from_vision_text_pretrained('org/tower', 'org/lm')`, "
                "pinned with vision_revision=/text_revision=), or pass allow_local_bases=True to push anyway."
            )


def _check_auto_map(folder: Path, config: Dict[str, Any], config_name: str) -> None:
    auto_map = config.get("auto_map") or {}
    for auto_class, reference in auto_map.items():
        module = str(reference).split(".")[0]
        if not (folder / f"{module}.py").is_file():
            raise CheckpointError(
                f"{config_name} maps {auto_class} to {reference}, but {folder} has no {module}.py: "
                f"`trust_remote_code` could not load the repo. {_SAVE_HINT}"
            )


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def inspect_checkpoint(folder, *, include_base: bool = False, allow_local_bases: bool = False) -> CheckpointSummary:
    """Check that `folder` is a pushable checkpoint and list what would go up.

    Adapter-only (the default): `adapter_config.json`, a readable `adapter_model.safetensors` holding only
    `adapter.*` (and adapter-trained `language_model.*`) tensors, finite; `config.json` of a `vision_adapter` model
    whose `auto_map` modules are present and whose bases are Hub ids; the processor files; and no base weights.
    With `include_base`: a full save (`model.safetensors` or its index and shards) instead of the adapter files.
    Only files listed in the folder's `vadapter_manifest.json` count, and they must match it. Raises
    `CheckpointError` naming the first problem found.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder. {_SAVE_HINT}")
    manifest = read_manifest(folder)
    if manifest is None:
        raise CheckpointError(
            f"{folder} has no {MANIFEST_NAME}, so which of its files form the checkpoint is unknown (it was saved by "
            f"an older hf_vadapter, or assembled by hand). Load it and save it again. {_SAVE_HINT}"
        )
    present = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    # The checkpoint's own files: what the manifest lists and is still a regular file here.
    names = sorted(n for n in manifest["files"] if (folder / n).is_file() and not (folder / n).is_symlink())

    model_config = _read_json_file(folder / CONFIG_NAME, "the model config with auto_map")
    if model_config.get("model_type") != "vision_adapter":
        raise CheckpointError(
            f"{folder / CONFIG_NAME} describes a {model_config.get('model_type')!r} model, not an hf_vadapter "
            f"'vision_adapter' model. {_SAVE_HINT}"
        )
    if not {"AutoConfig", "AutoModelForCausalLM"} <= set(model_config.get("auto_map") or {}):
        raise CheckpointError(
            f"{folder / CONFIG_NAME} has no auto_map for AutoConfig and AutoModelForCausalLM, so "
            f"`trust_remote_code` could not load it. {_SAVE_HINT}"
        )
    _check_auto_map(folder, model_config, CONFIG_NAME)

    base_weights = [name for name in names if _matches(name, BASE_WEIGHT_PATTERNS)]
    weight_files: List[str] = []
    if include_base:
        if not any(name in FULL_WEIGHTS for name in names):
            raise CheckpointError(
                f"include_base=True pushes a full model, but {folder} holds no model.safetensors (or its index): "
                "save one with `model.save_pretrained(folder)` and `processor.save_pretrained(folder)`."
            )
        weight_files = [name for name in base_weights if name.endswith(".safetensors") or name.endswith(".index.json")]
        if "model.safetensors.index.json" in names:
            index = _read_json_file(folder / "model.safetensors.index.json", "the shard index")
            missing = sorted({s for s in (index.get("weight_map") or {}).values() if s not in names})
            if missing:
                raise CheckpointError(f"The shard index in {folder} names shards that are missing: {missing}.")
        shapes: Dict[str, List[int]] = {}
        for name in weight_files:
            if name.endswith(".safetensors"):
                shapes.update(_tensor_shapes(folder / name))
        adapter_keys = [k for k in shapes if k.startswith("adapter.")]
        if not adapter_keys:
            raise CheckpointError(f"The full save in {folder} holds no adapter.* tensors.")
        trainable = sum(math.prod(shapes[k]) for k in adapter_keys)
        adapter_bytes = sum((folder / n).stat().st_size for n in weight_files)
        adapter_config = model_config.get("adapter_config") or {}
        if ADAPTER_WEIGHTS_NAME in names:
            weight_files.append(ADAPTER_WEIGHTS_NAME)
    else:
        base_weights = [name for name in present if _matches(name, BASE_WEIGHT_PATTERNS)]
        if base_weights:
            raise CheckpointError(
                f"{folder} holds full-model weights {base_weights}, which include the frozen bases. An adapter-only "
                "push never uploads them: save the adapter alone with `model.save_adapter(other_folder, "
                "processor=processor)` and push that, or pass include_base=True to push the full model on purpose."
            )
        adapter_config = _read_json_file(folder / ADAPTER_CONFIG_NAME, "the adapter config")
        if not adapter_config.get("adapter_type"):
            raise CheckpointError(f"{folder / ADAPTER_CONFIG_NAME} has no adapter_type.")
        saved_type = (model_config.get("adapter_config") or {}).get("adapter_type")
        if saved_type != adapter_config["adapter_type"]:
            raise CheckpointError(
                f"{ADAPTER_CONFIG_NAME} says adapter_type={adapter_config['adapter_type']!r} but {CONFIG_NAME} says "
                f"{saved_type!r}: the two files come from different saves. Re-save the adapter."
            )
        weights = folder / ADAPTER_WEIGHTS_NAME
        if not weights.is_file():
            raise CheckpointError(f"{folder} has no {ADAPTER_WEIGHTS_NAME} (the adapter weights). {_SAVE_HINT}")
        shapes = _tensor_shapes(weights)
        if not shapes:
            raise CheckpointError(f"{weights} holds no tensors.")
        foreign = [k for k in shapes if not k.startswith(("adapter.", "language_model."))]
        if foreign:
            raise CheckpointError(
                f"{weights} holds tensors outside the adapter, such as {foreign[:5]}: frozen base weights do not "
                f"belong in an adapter checkpoint. {_SAVE_HINT}"
            )
        _check_finite(weights)
        trainable = sum(math.prod(shape) for shape in shapes.values())
        adapter_bytes = weights.stat().st_size
        weight_files = [ADAPTER_WEIGHTS_NAME]
        _check_bases(model_config, allow_local_bases)

    if PROCESSOR_CONFIG_NAME not in names or not any(name in names for name in TOKENIZER_FILES):
        raise CheckpointError(
            f"{folder} has no processor files ({PROCESSOR_CONFIG_NAME} and a tokenizer file) in its checkpoint "
            f"({MANIFEST_NAME}), so `AutoProcessor.from_pretrained` could not load the repo. Save with "
            "`model.save_adapter(folder, processor=processor)` (or `model.save_pretrained(folder, processor=processor)`)."
        )
    _check_auto_map(folder, _read_json_file(folder / PROCESSOR_CONFIG_NAME, "the processor config"), PROCESSOR_CONFIG_NAME)

    verify_checkpoint(folder)
    files = list(weight_files) + [
        name
        for name in names + [MANIFEST_NAME]
        if name not in weight_files
        and name.endswith(UPLOAD_SUFFIXES)
        and name not in NEVER_UPLOAD
        and not _matches(name, BASE_WEIGHT_PATTERNS)
    ]
    skipped = [
        f"{name}/" if (folder / name).is_dir() else name
        for name in present
        if name not in files and name != "README.md"  # the folder's README.md goes up as the model card
    ]
    return CheckpointSummary(
        folder=folder,
        adapter_config=adapter_config,
        model_config=model_config,
        trainable_parameters=int(trainable),
        adapter_bytes=int(adapter_bytes),
        files=sorted(files),
        skipped=sorted(skipped),
        include_base=include_base,
    )


# ---------------------------------------------------------------------------------------------------- push


def build_model_card(summary: CheckpointSummary, repo_id: str, license: Optional[str] = None) -> str:
    """The README.md for `summary`: the folder's own README.md if it has one, else a generated card."""
    own = summary.folder / "README.md"
    if own.is_file():
        return own.read_text()
    return render_model_card(
        repo_id,
        summary.adapter_config,
        summary.model_config,
        summary.trainable_parameters,
        summary.adapter_bytes,
        read_training_info(summary.folder),
        license=license,
        include_base=summary.include_base,
    )


def push_adapter(
    folder,
    repo_id: str,
    *,
    private: bool = False,
    revision: Optional[str] = None,
    commit_message: Optional[str] = None,
    token: Optional[str] = None,
    include_base: bool = False,
    create_pr: bool = False,
    license: Optional[str] = None,
    allow_local_bases: bool = False,
    dry_run: bool = False,
) -> PushResult:
    """Upload an adapter checkpoint folder to `repo_id` in one commit and return where it went.

    Args:
        folder: a folder written by `model.save_adapter(folder, processor=processor)` (or, with `include_base`, by
            `model.save_pretrained` plus `processor.save_pretrained`).
        repo_id: `user/name` or `org/name`; created if missing (as private when `private`).
        private: create the repo private. Pushing with `private=True` to an existing public repo is refused.
        revision: the branch to commit to (default `main`); a branch that does not exist is created from `main`.
        commit_message: the commit title (default names the adapter type).
        token: a Hub token; None uses `HF_TOKEN` or the saved login.
        include_base: push a full save, frozen base weights included (see the module docstring).
        create_pr: open a pull request instead of committing to the branch.
        license: the adapter's licence id for the card (default: from `training_info.json`, else `other`).
        allow_local_bases: push even when the recorded bases are local paths (nobody else can then load it).
        dry_run: check the folder and build the card, but contact no server.
    """
    summary = inspect_checkpoint(folder, include_base=include_base, allow_local_bases=allow_local_bases)
    card = build_model_card(summary, repo_id, license=license)
    uploads = sorted(set(summary.files) | {"README.md"})
    branch = revision or "main"
    if _COMMIT_ID.fullmatch(branch):
        raise HubPushError(f"revision={branch!r} is a commit id; a push needs a branch name to commit to.")
    if dry_run:
        return PushResult(repo_id, branch, None, None, None, uploads, [], summary.skipped, card)

    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if private and not api.model_info(repo_id).private:
        raise HubPushError(
            f"{repo_id} already exists and is public; refusing to push with private=True. Make it private on the "
            "Hub first, or push to another repo."
        )
    if branch != "main":
        api.create_branch(repo_id, branch=branch, exist_ok=True)
    remote = api.list_repo_files(repo_id, revision=branch)
    stale = sorted(p for p in remote if p not in uploads and _matches(p.split("/")[-1], STALE_REMOTE_PATTERNS))
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(summary.folder / name))
        for name in summary.files
        if name != "README.md"
    ]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8")))
    operations += [CommitOperationDelete(path_in_repo=path) for path in stale]
    what = "full model" if include_base else "adapter"
    message = commit_message or f"Upload {summary.adapter_config.get('adapter_type', '')} {what} with hf_vadapter"
    info = api.create_commit(
        repo_id, operations=operations, commit_message=message, revision=branch, create_pr=create_pr
    )
    return PushResult(
        repo_id=repo_id,
        revision=branch,
        commit_oid=info.oid,
        commit_url=info.commit_url,
        pr_url=info.pr_url,
        uploaded=uploads,
        deleted=stale,
        skipped=summary.skipped,
        model_card=card,
    )


# ---------------------------------------------------------------------------------------------------- CLI hooks


def add_push_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register `push_adapter`'s arguments on an argparse (sub)parser."""
    parser.add_argument("folder", help="checkpoint folder written by model.save_adapter(folder, processor=...)")
    parser.add_argument("repo_id", help="Hub repo to push to, e.g. user/my-adapter (created when missing)")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--revision", default=None, help="branch to commit to (created from main when missing)")
    parser.add_argument("--commit-message", default=None, help="commit title")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the saved login)")
    parser.add_argument(
        "--include-base", action="store_true", help="push a full save with the frozen base weights (large)"
    )
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--license", default=None, help="licence id for the model card (default: other)")
    parser.add_argument(
        "--allow-local-bases", action="store_true", help="push even if the recorded bases are local paths"
    )
    parser.add_argument("--dry-run", action="store_true", help="check the folder and print the card; upload nothing")
    return parser


def run_push(args: argparse.Namespace) -> int:
    """Run a push from parsed arguments; prints the outcome and returns the exit status (0)."""
    result = push_adapter(
        args.folder,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        token=args.token,
        include_base=args.include_base,
        create_pr=args.create_pr,
        license=args.license,
        allow_local_bases=args.allow_local_bases,
        dry_run=args.dry_run,
    )
    if args.dry_run:
        print(result.model_card)
        print(f"Would upload to {result.repo_id}@{result.revision}: {', '.join(result.uploaded)}")
    else:
        print(f"Pushed to {result.repo_id}@{result.revision}: {result.commit_url}")
        if result.pr_url:
            print(f"Pull request: {result.pr_url}")
        if result.deleted:
            print(f"Deleted stale remote files: {', '.join(result.deleted)}")
    if result.skipped:
        print(f"Left local (not uploaded): {', '.join(result.skipped)}")
    return 0
