"""Checkpoint saves that touch only the library's own files, and the manifest that says which files form a checkpoint.

A save never swaps or deletes the target folder. Its files are written into a private temporary folder inside the
target (`.vadapter-tmp-<pid>-*`), flushed, and each is then renamed over its namesake (`os.replace` replaces a
symlink itself, never what it points to). `vadapter_manifest.json` lists every file of the checkpoint with its size
and sha256. It is written twice: with `"state": "writing"` before the first rename and with `"state": "complete"`
after the last, so a folder whose save was cut short is recognised and refused on load, while a process killed
before the renames leaves the previous checkpoint and its manifest untouched. SIGTERM is held back for the length
of a save, so a terminated run finishes the save it is in and then exits as asked.

Anything else in the folder (the user's files, symlinks, sub-folders) is never read, copied, followed or removed.
Files of the previous checkpoint that this save does not write again are removed only when the previous manifest
lists them and their content is still what that save wrote.
"""

import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Union

from transformers.utils import logging

from .errors import CheckpointError

logger = logging.get_logger(__name__)
PathLike = Union[str, os.PathLike]
MANIFEST_NAME = "vadapter_manifest.json"
TEMP_PREFIX = ".vadapter-tmp-"
FILE_MODE = 0o644
MANIFEST_FORMAT = 1


def sha256_file(path: PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_path(path: PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _describe(path: Path) -> Dict[str, object]:
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


# ---------------------------------------------------------------------------------------------------- reading


def read_manifest(folder: PathLike) -> Optional[Dict[str, object]]:
    """The manifest of a local checkpoint folder, or None for a folder saved before manifests existed."""
    path = Path(folder) / MANIFEST_NAME
    if not os.path.lexists(path):
        return None
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            raise ValueError("no files table")
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"{path} is unreadable ({error}): the last save into {folder} was interrupted or the file was damaged. "
            "Save the checkpoint again."
        ) from error
    return manifest


def verify_checkpoint(folder: PathLike) -> None:
    """Refuse a local folder whose manifest does not match its files (an interrupted save, or files changed since).

    Folders without a manifest (saved by an older hf_vadapter) are accepted as they are.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        return
    if manifest.get("state") != "complete":
        raise CheckpointError(
            f"The last save into {folder} was interrupted ({MANIFEST_NAME} says it was still writing), so the folder "
            "may hold a mix of two checkpoints. Save the checkpoint again, or load an earlier one."
        )
    problems: List[str] = []
    for name, expected in sorted(manifest["files"].items()):
        path = folder / name
        if not path.is_file() or path.is_symlink():
            problems.append(f"{name} is missing")
        elif path.stat().st_size != expected.get("size") or sha256_file(path) != expected.get("sha256"):
            problems.append(f"{name} differs")
    if problems:
        raise CheckpointError(
            f"{folder} does not match its {MANIFEST_NAME}: {', '.join(problems)}. The last save was interrupted, or "
            "these files were edited, truncated or corrupted since. Save the checkpoint again; to load hand-edited "
            f"files as they are, delete {MANIFEST_NAME}."
        )


def checkpoint_file_names(folder: PathLike) -> Optional[List[str]]:
    """The files that form the checkpoint in `folder` (checked against the manifest), or None without a manifest."""
    verify_checkpoint(folder)
    manifest = read_manifest(folder)
    return None if manifest is None else sorted(manifest["files"])


def warn_on_code_skew(folder: PathLike) -> List[str]:
    """Warn when the folder's remote-code files differ from the code running now, and return their names.

    In a process that imported hf_vadapter, the installed code runs, not the folder's copy (see docs/reliability.md).
    """
    own = Path(__file__).parent
    differing = sorted(
        path.name
        for path in Path(folder).glob("*.py")
        if path.is_file() and (own / path.name).is_file() and path.read_bytes() != (own / path.name).read_bytes()
    )
    if differing:
        logger.warning(
            "The remote-code files %s in %s differ from the hf_vadapter code running here (%s), which is what runs: "
            "the checkpoint was saved by another hf_vadapter version, or its code was edited. Results may differ "
            "from a load with trust_remote_code and without hf_vadapter; re-save the checkpoint with this version.",
            differing, folder, own,
        )
    return differing


# ---------------------------------------------------------------------------------------------------- writing


@contextlib.contextmanager
def sigterm_deferred() -> Iterator[None]:
    """Hold SIGTERM back until the block ends, then act on it as the previous handler would (by default: exit)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(frame))
    previous = signal.SIG_DFL if previous is None else previous  # a handler installed outside Python
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if received:
            if callable(previous):
                previous(signal.SIGTERM, received[0])
            elif previous == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGTERM)


def _remove_leftovers(folder: Path) -> None:
    """Remove temporary folders that an interrupted save (of a process no longer running) left in `folder`."""
    for entry in folder.iterdir():
        if not entry.name.startswith(TEMP_PREFIX) or entry.is_symlink() or not entry.is_dir():
            continue
        pid = entry.name[len(TEMP_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and _process_alive(int(pid)):
            continue  # another process is saving into this folder right now
        shutil.rmtree(entry, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_manifest(folder: Path, files: Dict[str, Dict[str, object]], state: str) -> None:
    handle, temp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-manifest-", dir=folder)
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump({"format": MANIFEST_FORMAT, "state": state, "files": files}, stream, indent=1, sort_keys=True)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temp, FILE_MODE)
        os.replace(temp, folder / MANIFEST_NAME)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_path(folder)


def _prepare_target(folder: PathLike) -> Path:
    folder = Path(folder).absolute()
    if os.path.lexists(folder) and not folder.is_dir():
        raise CheckpointError(
            f"{folder} exists and is not a folder; a checkpoint is a folder of files. Refusing to replace it: pass "
            "the path of a folder (new or existing) instead."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as error:
        raise CheckpointError(f"Cannot create the checkpoint folder {folder}: {error}.") from error
    return folder


def _commit(staging: Path, folder: Path) -> None:
    """Rename every file of `staging` over its namesake in `folder`, between the two manifest writes."""
    names = sorted(str(path.relative_to(staging)) for path in staging.rglob("*") if path.is_file())
    for name in names:
        destination = folder / name
        if destination.is_dir() and not destination.is_symlink():
            raise CheckpointError(
                f"{destination} is a folder, but the checkpoint has a file of that name. Move the folder away, or "
                "save the checkpoint into another folder."
            )
    files = {}
    for name in names:
        path = staging / name
        os.chmod(path, FILE_MODE)
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        files[name] = _describe(path)
    previous = read_manifest(folder) if os.path.lexists(folder / MANIFEST_NAME) else None

    _write_manifest(folder, files, "writing")
    for name in names:
        destination = folder / name
        if "/" in name:
            destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, destination)
    _remove_previous_files(folder, previous, files)
    _write_manifest(folder, files, "complete")


def _remove_previous_files(folder: Path, previous: Optional[dict], current: Dict[str, object]) -> None:
    """Remove files the previous save wrote and this one did not (a stale shard, say), if they are unchanged."""
    for name, expected in ((previous or {}).get("files") or {}).items():
        path = folder / name
        if name in current or path.is_symlink() or not path.is_file():
            continue
        if path.stat().st_size == expected.get("size") and sha256_file(path) == expected.get("sha256"):
            path.unlink()


def _is_disk_full(error: BaseException) -> bool:
    # safetensors reports a full disk as a SafetensorError whose text holds the OS error.
    return getattr(error, "errno", None) == errno.ENOSPC or "No space left" in str(error)


@contextlib.contextmanager
def checkpoint_writer(folder: PathLike) -> Iterator[Path]:
    """Yield an empty private folder to write a checkpoint's files into; on success they replace their namesakes in
    `folder` and the manifest records them. On any error `folder` keeps the previous checkpoint and nothing else
    in it changes."""
    folder = _prepare_target(folder)
    with sigterm_deferred():
        _remove_leftovers(folder)
        staging = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=folder))
        try:
            try:
                yield staging
            except Exception as error:
                if _is_disk_full(error):
                    raise CheckpointError(
                        f"No space left while writing the checkpoint to {folder}; the previous checkpoint is intact. "
                        "Free some disk space and save again."
                    ) from error
                raise
            _commit(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
