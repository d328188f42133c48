"""Shared fixtures: tiny random bases saved to folders, models built from them, and fresh-process loading."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One thread everywhere (subprocesses inherit it): exact-equality checks across processes need the same reduction
# order, and tiny models run faster without thread hand-offs on a shared 2-core machine.
os.environ["OMP_NUM_THREADS"] = "1"

import json
import signal
import subprocess
import sys
import textwrap
import time
from typing import Callable, Dict, Tuple

import numpy as np
import pytest
import torch
from PIL import Image

import hf_vadapter
from tiny_models import save_lm, save_tower

from transformers.utils import logging as hf_logging

torch.set_num_threads(1)
hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()


@pytest.fixture(scope="session")
def tiny_bases(tmp_path_factory) -> Callable[..., Tuple[str, str]]:
    """`tiny_bases(tower_kind, lm_kind, chat_template=False)` -> (tower folder, LM folder), built once per session."""
    root = tmp_path_factory.mktemp("bases")
    cache: Dict[tuple, str] = {}

    def get(tower: str, lm: str, chat_template: bool = False) -> Tuple[str, str]:
        if ("tower", tower) not in cache:
            cache[("tower", tower)] = str(save_tower(tower, root / f"tower-{tower}"))
        key = ("lm", lm, chat_template)
        if key not in cache:
            cache[key] = str(save_lm(lm, root / f"lm-{lm}-{int(chat_template)}", chat_template=chat_template))
        return cache[("tower", tower)], cache[key]

    return get


def build_model(tower_path: str, lm_path: str, adapter_config, seed: int = 0):
    """A model and its processor from tiny base folders, deterministic for a seed."""
    torch.manual_seed(seed)
    model = hf_vadapter.VisionAdapterForCausalLM.from_vision_text_pretrained(tower_path, lm_path, adapter_config)
    processor = hf_vadapter.VisionAdapterProcessor.for_model(model)
    return model, processor


def random_image(seed: int, size: Tuple[int, int] = (40, 48)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def kill_when_printed(script: str, marker: str, what: str, timeout: int = 300, sig: int = signal.SIGKILL) -> int:
    """Run `script` in a fresh Python, wait until it prints the line `marker`, then send it `sig` (SIGKILL: a crash
    at that point; SIGTERM: a job scheduler stopping it). Returns the exit status (minus the signal number when the
    signal ended it)."""
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while time.time() < deadline and process.stdout.readline().strip() != marker:
        assert process.poll() is None, f"{what} died before the kill point"
    os.kill(process.pid, sig)
    return process.wait(timeout=timeout)


def run_without_hf_vadapter(script: str, timeout: int = 600) -> dict:
    """Run `script` in a fresh Python where `import hf_vadapter` fails; it must print one JSON line last.

    This is how a Hub user without the package sees a saved folder: only `trust_remote_code` can load it.
    """
    prelude = textwrap.dedent(
        """
        import sys, json
        sys.modules["hf_vadapter"] = None  # any import of hf_vadapter now raises ImportError
        try:
            import hf_vadapter
            raise SystemExit("hf_vadapter was importable")
        except ImportError:
            pass
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd="/",
    )
    if result.returncode != 0:
        raise AssertionError(f"fresh process failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])
