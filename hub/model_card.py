"""The model card (README.md) of an adapter-only Hub repo: YAML front matter plus a short, factual body.

Everything in the card comes from the checkpoint folder itself, so the card says what the repo holds and nothing
else. Training facts are read, when present, from the files a training run leaves next to the adapter:

- `training_info.json` (hf_vadapter's own, optional): `{"datasets": [Hub dataset ids], "training_data": "free
  text", "metrics": {name: number}, "license": "...", "language": [...], "tags": [...], "description": "..."}`.
- `all_results.json`, `train_results.json`, `eval_results.json`: what `Trainer.save_metrics` writes (flat
  `{name: number}` dicts).
- `trainer_state.json`: what `Trainer` writes; the card takes `global_step`, `epoch`, the last logged training loss
  and the last logged `eval_*` values from `log_history`, and `best_metric`.
- `run_config.json`: what `hf_vadapter.training.run_training` writes (its model and data arguments); when
  `training_info.json` gives no `training_data`, the card describes the data from its `dataset`, `tasks`,
  `num_train_images` and `max_train_samples` entries. The file itself is not uploaded (it may hold local paths).

Metrics are merged in that order, earlier files winning. Files that are absent or unreadable are skipped: a card
never fails a push.
"""

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from huggingface_hub import ModelCard, ModelCardData

from ..metrics.tables import accuracy_table, metrics_by_split

TRAINING_INFO_NAME = "training_info.json"
# `metrics.json`: what `hf-vadapter evaluate` writes (flat) and the quickstart's summary (per split, one folder above
# its adapter; it is read from the checkpoint folder or its parent). Then what `Trainer.save_metrics` writes.
SPLIT_METRICS_NAME = "metrics.json"
METRICS_FILE_NAMES = (SPLIT_METRICS_NAME, "all_results.json", "train_results.json", "eval_results.json")
TRAINER_STATE_NAME = "trainer_state.json"
RUN_CONFIG_NAME = "run_config.json"  # written by hf_vadapter.training.run_training
# Numbers the card never lists as metrics: they describe the run, not the model.
_RUN_KEYS = {"epoch", "total_flos", "train_runtime", "train_samples_per_second", "train_steps_per_second",
             "eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "step", "learning_rate",
             "grad_norm", "num_input_tokens_seen"}


@dataclass
class TrainingInfo:
    """What the card says about training; every field may be empty."""

    datasets: List[str] = field(default_factory=list)
    training_data: Optional[str] = None
    description: Optional[str] = None
    license: Optional[str] = None
    language: List[str] = field(default_factory=list)
    tags: List[str] = field(default_factory=list)
    metrics: Dict[str, float] = field(default_factory=dict)
    split_metrics: Dict[str, Dict[str, float]] = field(default_factory=dict)  # {split: {metric: number}}
    global_step: Optional[int] = None
    epochs: Optional[float] = None
    sources: List[str] = field(default_factory=list)  # the files the facts came from


def is_hub_id(name: Optional[str]) -> bool:
    """True when `name` is a Hub repo id others can fetch, False for a local folder path (or nothing)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not name or os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name or os.path.isdir(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _read_json(path: Path) -> Optional[Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _numbers(values: Any) -> Dict[str, float]:
    if not isinstance(values, dict):
        return {}
    return {
        str(k): float(v)
        for k, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and k not in _RUN_KEYS
    }


def _as_list(value: Any) -> List[str]:
    if value is None:
        return []
    return [str(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def read_training_info(folder) -> TrainingInfo:
    """Collect the training facts found in `folder` (see the module docstring for the file names)."""
    folder = Path(folder)
    info = TrainingInfo()
    metrics: Dict[str, float] = {}

    own = _read_json(folder / TRAINING_INFO_NAME)
    if isinstance(own, dict):
        info.sources.append(TRAINING_INFO_NAME)
        info.datasets = _as_list(own.get("datasets"))
        info.training_data = own.get("training_data")
        info.description = own.get("description")
        info.license = own.get("license")
        info.language = _as_list(own.get("language"))
        info.tags = _as_list(own.get("tags"))
        metrics.update(_numbers(own.get("metrics")))

    for name in METRICS_FILE_NAMES:
        values = _read_json(folder / name)
        if values is None and name == SPLIT_METRICS_NAME:
            values = _read_json(folder.resolve().parent / name)
        if isinstance(values, dict) and name == SPLIT_METRICS_NAME:
            info.sources.append(name)
            info.split_metrics = metrics_by_split(values)
            continue
        if isinstance(values, dict):
            info.sources.append(name)
            for key, value in _numbers(values).items():
                metrics.setdefault(key, value)
            if info.epochs is None and isinstance(values.get("epoch"), (int, float)):
                info.epochs = float(values["epoch"])

    state = _read_json(folder / TRAINER_STATE_NAME)
    if isinstance(state, dict):
        info.sources.append(TRAINER_STATE_NAME)
        if isinstance(state.get("global_step"), int):
            info.global_step = state["global_step"]
        if info.epochs is None and isinstance(state.get("epoch"), (int, float)):
            info.epochs = float(state["epoch"])
        history = state.get("log_history") if isinstance(state.get("log_history"), list) else []
        last_loss = [entry["loss"] for entry in history if isinstance(entry, dict) and "loss" in entry]
        if last_loss and isinstance(last_loss[-1], (int, float)):
            metrics.setdefault("train_loss_last_logged", float(last_loss[-1]))
        last_eval = next(
            (e for e in reversed(history) if isinstance(e, dict) and any(str(k).startswith("eval_") for k in e)), {}
        )
        for key, value in _numbers({k: v for k, v in last_eval.items() if str(k).startswith("eval_")}).items():
            metrics.setdefault(key, value)
        best = state.get("best_metric")
        if isinstance(best, (int, float)) and math.isfinite(best):
            metrics.setdefault("best_metric", float(best))
    run = _read_json(folder / RUN_CONFIG_NAME)
    if isinstance(run, dict) and run.get("dataset") and not info.training_data:
        info.sources.append(RUN_CONFIG_NAME)
        parts = [f"`{run['dataset']}`"]
        if run.get("tasks"):
            parts.append(f"tasks: {run['tasks']}")
        if run.get("dataset") == "synthetic" and run.get("num_train_images"):
            parts.append(f"{run['num_train_images']} generated training images")
        if run.get("max_train_samples"):
            parts.append(f"at most {run['max_train_samples']} training rows")
        info.training_data = parts[0] + (f" ({'; '.join(parts[1:])})" if parts[1:] else "")
    info.metrics = metrics
    return info


def _format_number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,d}"
    return f"{value:.4g}"


def _describe_base(name: Optional[str], revision: Optional[str]) -> str:
    pinned = f"`{revision}`" if revision else "`main` (not pinned: loads whatever the branch holds then)"
    if not is_hub_id(name):
        return f"`{name}` (a local path, not on the Hub)"
    return f"[`{name}`](https://huggingface.co/{name}) at revision {pinned}"


def render_model_card(
    repo_id: str,
    adapter_config: Dict[str, Any],
    model_config: Dict[str, Any],
    trainable_parameters: int,
    adapter_bytes: int,
    training: Optional[TrainingInfo] = None,
    *,
    license: Optional[str] = None,
    include_base: bool = False,
) -> str:
    """The README.md text of an adapter repo.

    Args:
        repo_id: the Hub repo the card is for (used in the usage snippet).
        adapter_config: the `adapter_config.json` dict (its `adapter_type` and hyper-parameters).
        model_config: the `config.json` dict (base ids, revisions, sub-configs, image token).
        trainable_parameters: the number of values the adapter trains (the adapter weights' element count).
        adapter_bytes: the size of the adapter weights file.
        training: facts from `read_training_info`.
        license: the adapter's licence id; falls back to `training.license`, then to `other`.
        include_base: the repo also holds the frozen bases' weights (a full save).
    """
    training = training or TrainingInfo()
    vision = model_config.get("vision_model_name_or_path")
    text = model_config.get("text_model_name_or_path")
    vision_revision = model_config.get("vision_revision")
    text_revision = model_config.get("text_revision")
    adapter_type = adapter_config.get("adapter_type", "unknown")
    license = license or training.license or "other"

    tags = ["hf_vadapter", "vision-language-adapter", adapter_type, "custom_code", *training.tags]
    card_data = ModelCardData(
        library_name="transformers",
        base_model=[name for name in (vision, text) if is_hub_id(name)] or None,
        base_model_relation="finetune" if include_base else "adapter",
        pipeline_tag="image-text-to-text",
        license=license,
        tags=list(dict.fromkeys(tags)),
        datasets=training.datasets or None,
        language=training.language or None,
    )

    vision_config = model_config.get("vision_config") or {}
    text_config = model_config.get("text_config") or {}
    skip = {"adapter_type", "format_version", "vision_model_name_or_path", "vision_revision",
            "text_model_name_or_path", "text_revision"}
    hyper = {k: v for k, v in sorted(adapter_config.items()) if k not in skip}
    name = repo_id.split("/")[-1]

    lines = [f"# {name}", ""]
    if training.description:
        lines += [training.description.strip(), ""]
    if include_base:
        lines += [
            f"A **full** hf_vadapter vision-language model: a `{adapter_type}` adapter "
            f"({trainable_parameters:,d} trainable parameters) saved **together with its frozen bases**. Loading "
            "needs no other repo, but this repo redistributes the bases' weights: their licences apply to it.",
            "",
        ]
    else:
        lines += [
            f"An **adapter-only** hf_vadapter checkpoint: a `{adapter_type}` adapter with "
            f"{trainable_parameters:,d} trainable parameters ({adapter_bytes / 1e6:.2f} MB) between a frozen vision "
            "tower and a frozen causal LM. This repo holds no base weights: loading fetches both bases from the Hub by "
            "the ids and revisions below and attaches the adapter.",
            "",
        ]
    lines += [
        "## Base models",
        "",
        f"- Vision tower: {_describe_base(vision, vision_revision)} "
        f"(`{vision_config.get('model_type', '?')}`, hidden size {vision_config.get('hidden_size', '?')})",
        f"- Language model: {_describe_base(text, text_revision)} "
        f"(`{text_config.get('model_type', '?')}`, hidden size {text_config.get('hidden_size', '?')})",
        "",
        "Both bases stay frozen and keep their own licences.",
        "",
        "## Adapter",
        "",
        "| field | value |",
        "|---|---|",
        f"| adapter type | `{adapter_type}` |",
        f"| trainable parameters | {trainable_parameters:,d} |",
        f"| visual tokens per image | {model_config.get('num_image_tokens', '?')} |",
        f"| image placeholder | `{model_config.get('image_token', '<image>')}` |",
        f"| image size | {model_config.get('image_size', '?')} |",
    ]
    lines += [f"| {key} | `{json.dumps(value)}` |" for key, value in hyper.items()]
    lines += ["", "## Training", ""]
    if training.datasets:
        lines.append("Datasets: " + ", ".join(f"[`{d}`](https://huggingface.co/datasets/{d})" for d in training.datasets))
        lines.append("")
    if training.training_data:
        lines += [f"Training data: {training.training_data.strip()}", ""]
    if training.global_step is not None or training.epochs is not None:
        parts = []
        if training.global_step is not None:
            parts.append(f"{training.global_step:,d} optimizer steps")
        if training.epochs is not None:
            parts.append(f"{training.epochs:g} epochs")
        lines += ["Run: " + ", ".join(parts) + ".", ""]
    if training.split_metrics:
        lines += ["Evaluation:", "", *accuracy_table(training.split_metrics), ""]
    if training.metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {key} | {_format_number(value)} |" for key, value in sorted(training.metrics.items())]
    if training.metrics or training.split_metrics:
        lines += ["", f"Read from: {', '.join(f'`{s}`' for s in training.sources)}.", ""]
    if not (training.datasets or training.training_data or training.metrics or training.split_metrics or training.global_step):
        lines += ["No training data or metrics were recorded next to this checkpoint.", ""]

    lines += [
        "## Usage",
        "",
        "With transformers alone (the modeling code ships in this repo, hence `trust_remote_code=True`):",
        "",
        "```python",
        "from PIL import Image",
        "from transformers import AutoModelForCausalLM, AutoProcessor",
        "",
        f'model = AutoModelForCausalLM.from_pretrained("{repo_id}", trust_remote_code=True)',
        f'processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)',
        "",
        'image = Image.open("photo.jpg")',
        "# With no placeholder in the text, the processor puts the image where the adapter was trained to see it.",
        'inputs = processor(images=[image], text=["Describe the image."])',
        "output = model.generate(**inputs, max_new_tokens=30)",
        'print(processor.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0])',
        "```",
        "",
        "With the hf_vadapter package (same result; also takes `revision=` to pin this repo):",
        "",
        "```python",
        "from hf_vadapter import VisionAdapterForCausalLM",
        "",
        f'model = VisionAdapterForCausalLM.from_adapter_pretrained("{repo_id}")',
        "```",
        "",
    ]
    if not include_base:
        lines += [
            "Pass `revision=` to pin this adapter repo; the bases are pinned by the revisions recorded in "
            "`config.json` (unpinned bases load their current `main`, and a changed base is refused with an error "
            "naming both sides when its shapes no longer match).",
            "",
        ]
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines)).content
