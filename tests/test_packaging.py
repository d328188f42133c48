"""`pip install hf-vadapter` without extras is light and loads an adapter (a real fresh venv: minutes)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hf_vadapter
from conftest import build_model, random_image

ROOT = Path(__file__).resolve().parents[1]
EXTRAS_ONLY = ("peft", "gradio", "matplotlib", "pycocoevalcap", "datasets", "evaluate", "accelerate")


@pytest.mark.slow
def test_bare_install_imports_and_loads_an_adapter(tiny_bases, tmp_path):
    model, processor = build_model(*tiny_bases("vit", "llama"), hf_vadapter.MLPProjectorConfig(pool_size=2))
    model.save_adapter(tmp_path / "adapter", processor=processor)
    import torch

    inputs = processor(images=[random_image(0)], text=["<image>what is it?"])
    torch.save(dict(inputs), tmp_path / "inputs.pt")
    with torch.no_grad():
        torch.save(model(**inputs).logits, tmp_path / "expected.pt")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # no system site-packages
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    subprocess.run([*pip, "torch==2.13.0"], check=True, env=env, timeout=900)
    subprocess.run([*pip, str(ROOT)], check=True, env=env, timeout=900)
    script = textwrap.dedent(
        f"""
        import importlib.util, json, torch
        import hf_vadapter
        model = hf_vadapter.VisionAdapterForCausalLM.from_pretrained({str(tmp_path / "adapter")!r})
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        with torch.no_grad():
            diff = (model(**inputs).logits - torch.load({str(tmp_path / "expected.pt")!r})).abs().max().item()
        present = [name for name in {EXTRAS_ONLY!r} if importlib.util.find_spec(name) is not None]
        print(json.dumps({{"diff": diff, "present": present}}))
        """
    )
    result = subprocess.run(
        [python, "-c", script], capture_output=True, text=True, env={**env, "HF_HUB_OFFLINE": "1"}, cwd="/",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["diff"] == 0.0
    assert report["present"] == [], f"installed without extras: {report['present']}"
