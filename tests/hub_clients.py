"""Client subprocesses for the Hub tests: the real huggingface_hub client against tests/local_hub.py.

`HF_ENDPOINT` is read when huggingface_hub is imported, and conftest.py forces `HF_HUB_OFFLINE=1` in the test
process, so every Hub interaction runs in a fresh subprocess with `local_hub.client_env`. With
`without_package=True` the subprocess cannot import hf_vadapter (`sys.modules["hf_vadapter"] = None`): it sees the
repo as a user who only has transformers does, through `trust_remote_code`.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from local_hub import LocalHub, client_env

TESTS_DIR = Path(__file__).resolve().parent

_BLOCK_PACKAGE = """
import sys
sys.modules["hf_vadapter"] = None  # any import of hf_vadapter now raises ImportError
try:
    import hf_vadapter
    raise SystemExit("hf_vadapter was importable")
except ImportError:
    pass
"""

_COMMON = """
import json, sys, warnings
warnings.filterwarnings("ignore")
import numpy as np
from PIL import Image

def random_image(seed, size=(40, 48)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))

def attempt(call):
    '''Run call(); give "ok", or [exception class name, HTTP status or None, message].'''
    try:
        call()
        return "ok"
    except Exception as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        return [type(error).__name__, status, str(error)[:2000]]
"""


def run_hub_client(
    hub: LocalHub,
    token: str | None,
    script: str,
    *args: str,
    without_package: bool = False,
    cwd: Path | None = None,
    timeout: float = 600,
) -> Any:
    """Run `script` in a fresh client process talking to `hub` as `token`; return the JSON of its last stdout line.

    `args` become `sys.argv[1:]`. tests/ is on the path (for `tiny_models`).
    """
    env = client_env(hub, token)
    return run_client_process(env, script, *args, without_package=without_package, cwd=cwd or hub.root, timeout=timeout)


def run_client_process(
    env: dict, script: str, *args: str, without_package: bool = False, cwd: Path, timeout: float = 600
) -> Any:
    """Run `script` with the environment `env` (HF_ENDPOINT, HF_TOKEN, HF_HOME already chosen)."""
    env = {**env, "PYTHONPATH": str(TESTS_DIR), "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    code = (_BLOCK_PACKAGE if without_package else "") + _COMMON + textwrap.dedent(script)
    result = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, cwd=str(cwd), capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise AssertionError(f"client failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])
