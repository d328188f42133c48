"""The real huggingface_hub client (and transformers) against tests/local_hub.py.

Every client runs in a subprocess, because HF_ENDPOINT must be set before
huggingface_hub is imported. Each client snippet prints one JSON line as its result.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local_hub import LocalHub, run_client, running_local_hub

TOKENS = {"hf_alice": "alice", "hf_bob": "bob"}

PRELUDE = '''
import json
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
api = HfApi()

def attempt(call):
    """Run call(); give "ok" or [exception class name, HTTP status or None]."""
    try:
        call()
        return "ok"
    except Exception as error:
        return [type(error).__name__, getattr(getattr(error, "response", None), "status_code", None)]
'''


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    """One local hub for the module; each test uses its own repos."""
    with running_local_hub(tmp_path_factory.mktemp("local_hub"), TOKENS) as running:
        yield running


def client(hub: LocalHub, token: str | None, body: str, **values: Any) -> Any:
    """Run PRELUDE + ``body`` (with ``values`` bound as JSON literals) in a client subprocess."""
    bindings = "".join(f"{name} = json.loads({json.dumps(json.dumps(value))})\n" for name, value in values.items())
    return run_client(hub, token, PRELUDE + bindings + body)


def make_folder(root: Path) -> dict[str, bytes]:
    """Write an adapter-like folder (JSON, .py, README, ~2 MB binary) under ``root``; return path -> bytes."""
    files = {
        "config.json": json.dumps({"model_type": "demo", "hidden_size": 8}).encode(),
        "modeling_demo.py": b"class Demo:\n    pass\n",
        "README.md": b"---\nlicense: apache-2.0\n---\n# Demo adapter\n",
        "adapter/model.safetensors": os.urandom(2 * 1024 * 1024),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_whoami_and_bad_token(hub: LocalHub) -> None:
    """whoami names the token's user; an unknown token is a 401 HfHubHTTPError."""
    body = 'print(json.dumps([api.whoami()["name"], attempt(lambda: api.whoami(token="hf_nope"))]))'
    result = client(hub, "hf_alice", body)
    assert result == ["alice", ["HfHubHTTPError", 401]]


def test_upload_folder_then_download_byte_identical(hub: LocalHub, tmp_path: Path) -> None:
    """create_repo, upload_folder, list_repo_files, hf_hub_download and snapshot_download agree byte for byte."""
    files = make_folder(tmp_path / "folder")
    result = client(
        hub,
        "hf_alice",
        '''
url = api.create_repo("alice/roundtrip")
again = attempt(lambda: api.create_repo("alice/roundtrip"))
api.create_repo("alice/roundtrip", exist_ok=True)
commit = api.upload_folder(repo_id="alice/roundtrip", folder_path=folder)
unchanged = api.upload_folder(repo_id="alice/roundtrip", folder_path=folder)
print(json.dumps({
    "url": url, "again": again, "oid": commit.oid, "unchanged_oid": unchanged.oid,
    "sha": api.model_info("alice/roundtrip").sha,
    "listed": api.list_repo_files("alice/roundtrip"),
    "downloads": {name: hf_hub_download("alice/roundtrip", name) for name in names},
    "snapshot": snapshot_download("alice/roundtrip"),
}))
''',
        folder=str(tmp_path / "folder"),
        names=sorted(files),
    )
    assert result["url"] == f"{hub.endpoint}/alice/roundtrip"
    assert result["again"] == ["HfHubHTTPError", 409]
    assert re.fullmatch(r"[0-9a-f]{40}", result["oid"])
    assert result["sha"] == result["oid"] == result["unchanged_oid"], "re-uploading unchanged files must not commit"
    assert sorted(result["listed"]) == sorted([".gitattributes", *files])
    for name, data in files.items():
        assert Path(result["downloads"][name]).read_bytes() == data
        assert (Path(result["snapshot"]) / name).read_bytes() == data


def test_branch_and_commit_sha_pinning(hub: LocalHub) -> None:
    """A second commit on a branch leaves main and the first commit's sha serving the first version."""
    result = client(
        hub,
        "hf_alice",
        '''
api.create_repo("alice/pinned")
first = api.upload_file(path_or_fileobj=b"v1", path_in_repo="weights.bin", repo_id="alice/pinned").oid
missing_branch = attempt(lambda: api.upload_file(
    path_or_fileobj=b"v2", path_in_repo="weights.bin", repo_id="alice/pinned", revision="dev"))
api.create_branch("alice/pinned", branch="dev")
second = api.upload_file(path_or_fileobj=b"v2", path_in_repo="weights.bin", repo_id="alice/pinned", revision="dev").oid
api.upload_file(path_or_fileobj=b"x", path_in_repo="dev_only.txt", repo_id="alice/pinned", revision="dev")
read = lambda revision: open(hf_hub_download("alice/pinned", "weights.bin", revision=revision), "rb").read().decode()
print(json.dumps({
    "first": first, "second": second, "missing_branch": missing_branch,
    "main": read("main"), "dev": read("dev"), "first_sha": read(first), "second_sha": read(second),
    "dev_sha": api.model_info("alice/pinned", revision="dev").sha,
    "main_files": api.list_repo_files("alice/pinned"),
    "dev_files": api.list_repo_files("alice/pinned", revision="dev"),
    "snapshot_first": open(snapshot_download("alice/pinned", revision=first) + "/weights.bin").read(),
}))
''',
    )
    assert result["missing_branch"] == ["RevisionNotFoundError", 404]
    assert (result["main"], result["dev"], result["first_sha"], result["second_sha"]) == ("v1", "v2", "v1", "v2")
    assert result["first"] != result["second"]
    assert result["dev_sha"] not in (result["first"], result["second"]), "dev moved on to the dev_only.txt commit"
    assert "dev_only.txt" in result["dev_files"] and "dev_only.txt" not in result["main_files"]
    assert result["snapshot_first"] == "v1"


def test_deletions_and_folder_listing(hub: LocalHub) -> None:
    """delete_file / delete_folder make commits; list_repo_tree lists one level or a subfolder."""
    result = client(
        hub,
        "hf_alice",
        '''
from huggingface_hub import CommitOperationAdd
api.create_repo("alice/tidy")
api.create_commit("alice/tidy", commit_message="add", operations=[
    CommitOperationAdd(path_in_repo=path, path_or_fileobj=b"x")
    for path in ["keep.json", "old.bin", "shards/a/1.bin", "shards/b/2.bin"]])
top = sorted((type(e).__name__, e.path) for e in api.list_repo_tree("alice/tidy"))
shards = sorted(e.path for e in api.list_repo_tree("alice/tidy", "shards", recursive=True))
api.delete_file("old.bin", "alice/tidy")
api.delete_folder("shards/a", "alice/tidy")
missing = attempt(lambda: api.delete_file("nope.bin", "alice/tidy"))
print(json.dumps({"top": top, "shards": shards, "missing": missing, "files": api.list_repo_files("alice/tidy")}))
''',
    )
    assert result["top"] == [["RepoFile", ".gitattributes"], ["RepoFile", "keep.json"], ["RepoFile", "old.bin"],
                             ["RepoFolder", "shards"]]
    assert result["shards"] == ["shards/a", "shards/a/1.bin", "shards/b", "shards/b/2.bin"]
    assert result["missing"] == ["RemoteEntryNotFoundError", 404]
    assert sorted(result["files"]) == [".gitattributes", "keep.json", "shards/b/2.bin"]


def test_private_repo_needs_the_owners_token(hub: LocalHub) -> None:
    """Private repos: the owner reads; another user, no token and a bad token get the client's typed errors."""
    result = client(
        hub,
        None,
        '''
api.create_repo("alice/secret", private=True, token="hf_alice")
api.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id="alice/secret", token="hf_alice")
import tempfile  # a fresh cache per call: a cached copy would hide the refusal
download = lambda token: hf_hub_download("alice/secret", "config.json", token=token, cache_dir=tempfile.mkdtemp())
print(json.dumps({
    "private": api.model_info("alice/secret", token="hf_alice").private,
    "owner": attempt(lambda: download("hf_alice")),
    "other_user": attempt(lambda: download("hf_bob")),
    "anonymous": attempt(lambda: download(False)),
    "bad_token": attempt(lambda: download("hf_nope")),
    "other_user_info": attempt(lambda: api.model_info("alice/secret", token="hf_bob")),
    "other_user_snapshot": attempt(lambda: snapshot_download("alice/secret", token="hf_bob")),
    "other_user_write": attempt(lambda: api.upload_file(
        path_or_fileobj=b"x", path_in_repo="x", repo_id="alice/secret", token="hf_bob")),
    "other_namespace": attempt(lambda: api.create_repo("alice/by-bob", token="hf_bob")),
}))
''',
    )
    assert result["private"] is True
    assert result["owner"] == "ok"
    assert result["other_user"] == ["RepositoryNotFoundError", 404]
    assert result["anonymous"] == ["RepositoryNotFoundError", 401]
    assert result["bad_token"] == ["HfHubHTTPError", 401]
    assert result["other_user_info"] == ["RepositoryNotFoundError", 404]
    assert result["other_user_snapshot"] == ["RepositoryNotFoundError", 404]
    assert result["other_user_write"] == ["RepositoryNotFoundError", 404]
    assert result["other_namespace"] == ["HfHubHTTPError", 403]


def test_dataset_repos_are_refused(hub: LocalHub) -> None:
    """The fake holds model repos only (what the push and loading use); a dataset repo gets a clear 400."""
    result = client(
        hub,
        "hf_alice",
        'print(json.dumps(attempt(lambda: api.create_repo("alice/data", repo_type="dataset"))))',
    )
    assert result == ["BadRequestError", 400]


def test_transformers_autoconfig_fetches_pushed_config(hub: LocalHub) -> None:
    """transformers.AutoConfig.from_pretrained("user/repo") goes through the local hub."""
    config = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "intermediate_size": 128, "vocab_size": 100}
    result = client(
        hub,
        "hf_alice",
        '''
api.create_repo("alice/tiny-llama")
api.upload_file(path_or_fileobj=json.dumps(config).encode(), path_in_repo="config.json", repo_id="alice/tiny-llama")
from transformers import AutoConfig
loaded = AutoConfig.from_pretrained("alice/tiny-llama")
print(json.dumps([type(loaded).__name__, loaded.hidden_size, loaded.num_hidden_layers]))
''',
        config=config,
    )
    assert result == ["LlamaConfig", 64, 2]
