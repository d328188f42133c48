"""Opt-in: the push-and-load round trip against the real Hugging Face Hub.

Skipped unless `HF_VADAPTER_LIVE_TOKEN` holds a write token (optionally `HF_VADAPTER_LIVE_ENDPOINT`, e.g. a
staging Hub). It exercises what the local server cannot: real authentication, LFS/Xet uploads of the safetensors
files, the Hub's README metadata validation, and private-repo access on the real server. Every repo it creates is
private, named `hf-vadapter-live-*-<random>`, and deleted at the end, pass or fail.

    HF_VADAPTER_LIVE_TOKEN=hf_xxx python -m pytest tests/test_hub_live.py
"""

import os
import tempfile
import uuid
from pathlib import Path

import pytest

from hub_clients import run_client_process

TOKEN = os.environ.get("HF_VADAPTER_LIVE_TOKEN")
pytestmark = pytest.mark.skipif(not TOKEN, reason="set HF_VADAPTER_LIVE_TOKEN to run against the real Hub")


def _live_env(home: Path, token) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="0", HF_HUB_DISABLE_TELEMETRY="1", TRANSFORMERS_OFFLINE="0")
    if os.environ.get("HF_VADAPTER_LIVE_ENDPOINT"):
        env["HF_ENDPOINT"] = os.environ["HF_VADAPTER_LIVE_ENDPOINT"]
    if token:
        env["HF_TOKEN"] = token
    return env


PUBLISH = """
import torch
from pathlib import Path
from huggingface_hub import HfApi
import hf_vadapter
from hf_vadapter.hub.push import push_adapter
from tiny_models import save_lm, save_tower

root, suffix = Path(sys.argv[1]), sys.argv[2]
api = HfApi()
user = api.whoami()["name"]
names = {role: f"{user}/hf-vadapter-live-{role}-{suffix}" for role in ("vit", "llama", "adapter")}
json.dump(names, open(root / "names.json", "w"))  # for cleanup even if a later step fails
shas = {}
for role, folder in (("vit", save_tower("vit", root / "vit")), ("llama", save_lm("llama", root / "llama"))):
    api.create_repo(names[role], private=True)
    shas[role] = api.upload_folder(repo_id=names[role], folder_path=str(folder)).oid
torch.manual_seed(0)
model = hf_vadapter.VisionAdapterForCausalLM.from_vision_text_pretrained(
    names["vit"], names["llama"], hf_vadapter.MLPProjectorConfig(),
    vision_revision=shas["vit"], text_revision=shas["llama"])
processor = hf_vadapter.VisionAdapterProcessor.for_model(model)
inputs = processor(images=[random_image(0)], text=["what color is the circle?"])
torch.save(dict(inputs), root / "inputs.pt")
with torch.no_grad():
    torch.save(model(**inputs).logits, root / "logits.pt")
model.save_adapter(root / "adapter", processor=processor)
result = push_adapter(root / "adapter", names["adapter"], private=True)
print(json.dumps({"names": names, "commit": result.commit_oid, "files": api.list_repo_files(names["adapter"])}))
"""

LOAD = """
import torch
from transformers import AutoModelForCausalLM
root, repo, commit = sys.argv[1:4]
inputs = torch.load(root + "/inputs.pt")
model = AutoModelForCausalLM.from_pretrained(repo, revision=commit, trust_remote_code=True)
with torch.no_grad():
    diff = (model(**inputs).logits - torch.load(root + "/logits.pt")).abs().max().item()
print(json.dumps({"diff": diff}))
"""

CLEANUP = """
from huggingface_hub import HfApi
api = HfApi()
for repo in json.load(open(sys.argv[1] + "/names.json")).values():
    api.delete_repo(repo, missing_ok=True)
print(json.dumps("ok"))
"""

ANONYMOUS = """
from huggingface_hub import hf_hub_download
print(json.dumps(attempt(lambda: hf_hub_download(sys.argv[1], "config.json"))))
"""


def test_push_and_load_against_the_real_hub(tmp_path):
    suffix = uuid.uuid4().hex[:8]
    try:
        published = run_client_process(_live_env(tmp_path / "home-push", TOKEN), PUBLISH, str(tmp_path), suffix, cwd=tmp_path)
        files = set(published["files"])
        assert "adapter_model.safetensors" in files and "README.md" in files
        assert not [f for f in files if f.startswith("model.") or f.endswith(".bin")]
        repo = published["names"]["adapter"]
        loaded = run_client_process(
            _live_env(tmp_path / "home-load", TOKEN), LOAD, str(tmp_path), repo, published["commit"],
            without_package=True, cwd=tmp_path,
        )
        assert loaded["diff"] == 0.0
        refused = run_client_process(_live_env(tmp_path / "home-anon", None), ANONYMOUS, repo, cwd=tmp_path)
        assert refused != "ok"
    finally:
        if (tmp_path / "names.json").exists():
            run_client_process(_live_env(Path(tempfile.mkdtemp()), TOKEN), CLEANUP, str(tmp_path), cwd=tmp_path)
