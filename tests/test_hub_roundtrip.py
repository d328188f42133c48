"""Push an adapter to a local Hub-protocol server and pull it back, with the real huggingface_hub client.

The tiny bases are themselves pushed to the local hub as repos, and the model is built from those Hub ids (pinned
to their commits), so the ids recorded in the adapter are Hub ids. One module fixture publishes:

- `alice/captioner`: two commits of an MLP-projector adapter (the second with perturbed weights);
- `alice/private-captioner`: the first adapter in a private repo;
- `alice/raw-upload`: the raw `save_adapter` folder uploaded with plain `upload_folder`.

Then fresh processes pull: without hf_vadapter through `trust_remote_code`, and with it through
`from_adapter_pretrained`, comparing logits and generations with the publishing process's own model.
"""

import math

import pytest

from hub_clients import run_hub_client
from local_hub import LocalHub, running_local_hub

TOKENS = {"hf_alice": "alice", "hf_bob": "bob"}

PUBLISH = """
import torch
from pathlib import Path
from huggingface_hub import HfApi
import hf_vadapter
from hf_vadapter.hub.push import push_adapter
from tiny_models import save_lm, save_tower

root = Path(sys.argv[1])
api = HfApi()

def publish_folder(repo, folder):
    api.create_repo(repo)
    return api.upload_folder(repo_id=repo, folder_path=str(folder)).oid

vit_sha = publish_folder("alice/tiny-vit", save_tower("vit", root / "vit"))
lm_sha = publish_folder("alice/tiny-llama", save_lm("llama", root / "llama"))

torch.manual_seed(0)
model = hf_vadapter.VisionAdapterForCausalLM.from_vision_text_pretrained(
    "alice/tiny-vit", "alice/tiny-llama", hf_vadapter.MLPProjectorConfig(feature_layers=[-2, -1], pool_size=2),
    vision_revision=vit_sha, text_revision=lm_sha,
)
processor = hf_vadapter.VisionAdapterProcessor.for_model(model)
inputs = processor(images=[random_image(0), random_image(1)], text=["what color is the circle?", "describe the image."])
torch.save(dict(inputs), root / "inputs.pt")

def snapshot(tag):
    with torch.no_grad():
        torch.save(model(**inputs).logits, root / f"logits_{tag}.pt")
    tokens = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    torch.save(tokens, root / f"tokens_{tag}.pt")

snapshot("first")
model.save_adapter(root / "first", processor=processor)
first = push_adapter(root / "first", "alice/captioner", commit_message="first adapter")

torch.manual_seed(1)
with torch.no_grad():
    for parameter in model.adapter.parameters():
        parameter.add_(0.5 * torch.randn_like(parameter))
snapshot("second")
model.save_adapter(root / "second", processor=processor)
second = push_adapter(root / "second", "alice/captioner")

private = push_adapter(root / "first", "alice/private-captioner", private=True)
api.create_repo("alice/raw-upload")
api.upload_folder(repo_id="alice/raw-upload", folder_path=str(root / "first"))

print(json.dumps({
    "first": first.commit_oid, "second": second.commit_oid, "private": private.commit_oid,
    "vit_sha": vit_sha, "lm_sha": lm_sha,
    "uploaded": second.uploaded, "deleted": second.deleted,
    "trainable": model.get_nb_trainable_parameters()[0],
    "adapter_keys": sorted(model.adapter_state_dict()),
}))
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> LocalHub:
    with running_local_hub(tmp_path_factory.mktemp("hub_roundtrip"), TOKENS) as running:
        yield running


@pytest.fixture(scope="module")
def published(hub, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("published")
    result = run_hub_client(hub, "hf_alice", PUBLISH, str(root))
    result["root"] = str(root)
    return result


def test_push_uploads_an_adapter_only_repo(hub, published):
    """The repo lists the adapter, config, code, processor and card, and no base weight; anyone can download it."""
    script = """
    from huggingface_hub import HfApi, ModelCard, hf_hub_download
    from safetensors import safe_open
    api = HfApi()
    files = api.list_repo_files("alice/captioner")
    with safe_open(hf_hub_download("alice/captioner", "adapter_model.safetensors"), framework="np") as handle:
        shapes = {key: handle.get_slice(key).get_shape() for key in handle.keys()}
    config = json.load(open(hf_hub_download("alice/captioner", "config.json")))
    card = ModelCard.load("alice/captioner")
    print(json.dumps({"files": files, "shapes": shapes, "config": {k: config.get(k) for k in (
        "auto_map", "vision_model_name_or_path", "vision_revision", "text_model_name_or_path", "text_revision")},
        "card_data": card.data.to_dict(), "card_text": card.text}))
    """
    result = run_hub_client(hub, None, script)
    files = set(result["files"])
    for name in ("adapter_model.safetensors", "config.json", "README.md", "processor_config.json", "tokenizer.json",
                 "modeling_vadapter.py", "configuration_vadapter.py", "processing_vadapter.py"):
        assert name in files, name
    # No frozen base weights, no pickles, and no root adapter_config.json (transformers would take it for PEFT).
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".gguf", ".onnx")) or f.startswith("model.")]
    assert [f for f in files if f.endswith(".safetensors")] == ["adapter_model.safetensors"]
    assert "adapter_config.json" not in files
    assert files - {".gitattributes"} == set(published["uploaded"])
    assert sorted(result["shapes"]) == published["adapter_keys"]
    assert sum(math.prod(shape) for shape in result["shapes"].values()) == published["trainable"]

    config = result["config"]
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_vadapter.VisionAdapterForCausalLM"
    assert (config["vision_model_name_or_path"], config["vision_revision"]) == ("alice/tiny-vit", published["vit_sha"])
    assert (config["text_model_name_or_path"], config["text_revision"]) == ("alice/tiny-llama", published["lm_sha"])

    data = result["card_data"]
    assert data["base_model"] == ["alice/tiny-vit", "alice/tiny-llama"]
    assert data["base_model_relation"] == "adapter"
    assert data["pipeline_tag"] == "image-text-to-text"
    assert data["library_name"] == "transformers"
    assert "mlp_projector" in data["tags"] and "hf_vadapter" in data["tags"]
    assert f"{published['trainable']:,d} trainable parameters" in result["card_text"]
    assert 'AutoModelForCausalLM.from_pretrained("alice/captioner", trust_remote_code=True)' in result["card_text"]


def test_fresh_process_without_package_loads_through_trust_remote_code(hub, published):
    """Without hf_vadapter: the head and a pinned first commit give the publisher's logits; private repos stay hidden."""
    script = """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor
    root = sys.argv[1]
    inputs = torch.load(root + "/inputs.pt")
    out = {}
    model = AutoModelForCausalLM.from_pretrained("alice/captioner", trust_remote_code=True)
    out["module"] = type(model).__module__
    with torch.no_grad():
        out["head_diff"] = (model(**inputs).logits - torch.load(root + "/logits_second.pt")).abs().max().item()
    tokens = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    out["head_tokens_equal"] = bool(torch.equal(tokens, torch.load(root + "/tokens_second.pt")))

    processor = AutoProcessor.from_pretrained("alice/captioner", trust_remote_code=True)
    again = processor(images=[random_image(0), random_image(1)], text=["what color is the circle?", "describe the image."])
    out["processor_module"] = type(processor).__module__
    out["processor_equal"] = all(torch.equal(again[k], inputs[k]) for k in inputs)

    pinned = AutoModelForCausalLM.from_pretrained("alice/captioner", revision=sys.argv[2], trust_remote_code=True)
    with torch.no_grad():
        out["first_diff"] = (pinned(**inputs).logits - torch.load(root + "/logits_first.pt")).abs().max().item()

    out["private_anonymous"] = attempt(lambda: AutoConfig.from_pretrained("alice/private-captioner", trust_remote_code=True))
    raw = AutoModelForCausalLM.from_pretrained("alice/raw-upload", trust_remote_code=True)
    with torch.no_grad():
        out["raw_upload_diff"] = (raw(**inputs).logits - torch.load(root + "/logits_first.pt")).abs().max().item()
    print(json.dumps(out))
    """
    result = run_hub_client(hub, None, script, published["root"], published["first"], without_package=True)
    assert result["module"].startswith("transformers_modules.alice.captioner")
    assert result["processor_module"].startswith("transformers_modules.alice.captioner")
    assert result["head_diff"] == 0.0
    assert result["head_tokens_equal"]
    assert result["processor_equal"]
    assert result["first_diff"] == 0.0
    assert result["private_anonymous"][0] in ("OSError", "RepositoryNotFoundError")
    # A save_adapter folder uploaded as is loads too: its config file is not the `adapter_config.json` that
    # transformers (with peft installed) would take for a PEFT adapter.
    assert result["raw_upload_diff"] == 0.0


def test_package_loads_pinned_revisions_private_repos_and_refuses_bad_tokens(hub, published):
    """With hf_vadapter: revision pinning, a new branch, stale-file cleanup, explicit tokens for a private repo, and
    refused pushes."""
    script = """
    import torch
    from hf_vadapter import VisionAdapterForCausalLM
    from hf_vadapter.hub.push import push_adapter
    root = sys.argv[1]
    inputs = torch.load(root + "/inputs.pt")
    def diff(model, tag):
        with torch.no_grad():
            return (model(**inputs).logits - torch.load(f"{root}/logits_{tag}.pt")).abs().max().item()
    out = {}
    out["pinned_first"] = diff(VisionAdapterForCausalLM.from_adapter_pretrained("alice/captioner", revision=sys.argv[2]), "first")
    out["auto_head"] = diff(VisionAdapterForCausalLM.from_pretrained("alice/captioner"), "second")
    # Bob first: once alice's download sits in this process's cache, huggingface_hub serves cached files when the
    # server refuses a token (it treats the refusal like being offline), so the check must precede it.
    out["private_bob"] = attempt(lambda: VisionAdapterForCausalLM.from_adapter_pretrained("alice/private-captioner", token="hf_bob"))
    out["private_alice"] = diff(VisionAdapterForCausalLM.from_adapter_pretrained("alice/private-captioner", token="hf_alice"), "first")
    # A new branch: created from main by the push, loadable by name.
    dev = push_adapter(root + "/first", "alice/captioner", revision="dev")
    out["dev_branch"] = diff(VisionAdapterForCausalLM.from_adapter_pretrained("alice/captioner", revision="dev"), "first")
    # A full-model file left on the branch by someone else is deleted by the next adapter push.
    from huggingface_hub import HfApi
    HfApi().upload_file(path_or_fileobj=b"stale", path_in_repo="model.safetensors", repo_id="alice/captioner", revision="dev")
    again = push_adapter(root + "/second", "alice/captioner", revision="dev")
    out["dev_deleted"] = again.deleted
    out["dev_files"] = HfApi().list_repo_files("alice/captioner", revision="dev")
    out["dev_second"] = diff(VisionAdapterForCausalLM.from_pretrained("alice/captioner", revision="dev"), "second")
    out["push_bad_token"] = attempt(lambda: push_adapter(root + "/first", "alice/other", token="hf_nope"))
    out["push_foreign_namespace"] = attempt(lambda: push_adapter(root + "/first", "alice/captioner", token="hf_bob"))
    out["private_over_public"] = attempt(lambda: push_adapter(root + "/first", "alice/captioner", private=True))
    print(json.dumps(out))
    """
    result = run_hub_client(hub, "hf_alice", script, published["root"], published["first"])
    assert result["pinned_first"] == 0.0
    assert result["auto_head"] == 0.0
    assert result["private_alice"] == 0.0
    assert result["private_bob"][0] == "OSError" and "private repository" in result["private_bob"][2]
    assert result["dev_branch"] == 0.0 and result["dev_second"] == 0.0
    assert result["dev_deleted"] == ["model.safetensors"] and "model.safetensors" not in result["dev_files"]
    assert result["push_bad_token"][:2] == ["HfHubHTTPError", 401]
    assert result["push_foreign_namespace"][1] == 403
    assert result["private_over_public"][0] == "HubPushError" and "public" in result["private_over_public"][2]


MISMATCH_SETUP = """
import torch
from pathlib import Path
from huggingface_hub import HfApi
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM
import hf_vadapter
from hf_vadapter.hub.push import push_adapter
from tiny_models import build_tokenizer, save_lm, save_tower

root = Path(sys.argv[1])
api = HfApi()
out = {}

def publish_folder(repo, folder):
    api.create_repo(repo, exist_ok=True)
    return api.upload_folder(repo_id=repo, folder_path=str(folder)).oid

# Unpinned bases that change on main after the adapter was trained.
publish_folder("alice/moving-vit", save_tower("vit", root / "vit"))
publish_folder("alice/moving-llama", save_lm("llama", root / "llama"))
torch.manual_seed(0)
model = hf_vadapter.VisionAdapterForCausalLM.from_vision_text_pretrained(
    "alice/moving-vit", "alice/moving-llama", hf_vadapter.MLPProjectorConfig())
processor = hf_vadapter.VisionAdapterProcessor.for_model(model)
model.save_adapter(root / "adapter", processor=processor)
push_adapter(root / "adapter", "alice/on-moving-bases")

# An adapter on bases that stay put, with one tensor dropped: push cannot tell (it never builds the model).
publish_folder("alice/stable-vit", root / "vit")
publish_folder("alice/stable-llama", root / "llama")
stable = hf_vadapter.VisionAdapterForCausalLM.from_vision_text_pretrained(
    "alice/stable-vit", "alice/stable-llama", hf_vadapter.MLPProjectorConfig())
stable.save_adapter(root / "missing", processor=hf_vadapter.VisionAdapterProcessor.for_model(stable))
weights = load_file(str(root / "missing" / "adapter_model.safetensors"))
dropped = sorted(weights)[0]
del weights[dropped]
save_file(weights, str(root / "missing" / "adapter_model.safetensors"), metadata={"format": "pt"})
(root / "missing" / "vadapter_manifest.json").unlink()  # the folder no longer is what the save wrote
publish_folder("alice/missing-keys", root / "missing")  # push_adapter would refuse it: uploaded as is
out["dropped"] = dropped

def load(repo):
    return hf_vadapter.VisionAdapterForCausalLM.from_adapter_pretrained(repo)

out["missing_keys"] = attempt(lambda: load("alice/missing-keys"))

# The LM on main becomes a wider one (hidden 48).
tokenizer = build_tokenizer()
config = AutoConfig.for_model("llama", vocab_size=len(tokenizer), hidden_size=48, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
AutoModelForCausalLM.from_config(config).save_pretrained(root / "wide")
tokenizer.save_pretrained(root / "wide")
publish_folder("alice/moving-llama", root / "wide")
out["wider_lm"] = attempt(lambda: load("alice/on-moving-bases"))

# Then the tower on main becomes a CLIP tower of the same width.
publish_folder("alice/moving-llama", root / "llama")
publish_folder("alice/moving-vit", save_tower("clip", root / "clip"))
out["other_tower"] = attempt(lambda: load("alice/on-moving-bases"))
print(json.dumps(out))
"""


def test_base_mismatch_and_missing_keys_through_the_hub(hub, tmp_path):
    """Bases that changed on main since training, and a checkpoint missing a tensor, fail clearly on both paths."""
    setup = run_hub_client(hub, "hf_alice", MISMATCH_SETUP, str(tmp_path))
    kind, _, message = setup["missing_keys"]
    assert kind == "CheckpointError" and setup["dropped"] in message and "missing" in message
    kind, _, message = setup["wider_lm"]
    assert kind == "BackboneMismatchError"
    assert "LM hidden size: adapter trained on 32, bases loaded have 48" in message
    kind, _, message = setup["other_tower"]
    assert kind == "BackboneMismatchError"
    assert "tower type: adapter trained on vit, bases loaded have clip_vision_model" in message

    script = """
    from transformers import AutoModelForCausalLM
    out = {repo: attempt(lambda: AutoModelForCausalLM.from_pretrained(repo, trust_remote_code=True))
           for repo in ("alice/on-moving-bases", "alice/missing-keys")}
    print(json.dumps(out))
    """
    result = run_hub_client(hub, None, script, without_package=True)
    kind, _, message = result["alice/on-moving-bases"]
    assert kind == "BackboneMismatchError" and "tower type: adapter trained on vit" in message
    kind, _, message = result["alice/missing-keys"]
    assert kind == "CheckpointError" and setup["dropped"] in message
